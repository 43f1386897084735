"""Sealed and compressed arguments (_seal.py, #15): keys, sealing, opening, refusals.
No Redis: the packer is pure, and a job's defer fails before any Redis call."""

from __future__ import annotations

import base64
import json
import os
import sys
import zlib

import msgspec
import pytest

import asyncjobs
from asyncjobs import ConfigError, DecryptionError, PayloadError
from asyncjobs._seal import (
    ENCRYPTED,
    KEYS_ENV,
    Keyring,
    Packer,
    display_args,
    generate_key,
    is_packed,
)

pytestmark = pytest.mark.timeout(30)

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
# Two keys in the "version:base64" form of ASYNCJOBS_ENCRYPTION_KEYS, fixed so that the
# test ids are the same at every collection (pytest -n compares them).
B1, B2 = base64.b64encode(K1).decode(), base64.b64encode(K2).decode()
RAW = b'{"card":"4111-1111-1111-1111","amount":12}'
NO_REDIS = "redis://127.0.0.1:1/0"


def packer(keys: dict[int, bytes] | None = None, compress_over: int | None = None) -> Packer:
    return Packer.configure({1: K1} if keys is None else keys, compress_over)


def test_sealed_arguments_open_with_the_same_job_and_jid_only() -> None:
    p = packer()
    sealed = p.pack(RAW, "charge", "jid1", seal=True, compress_over=None)
    assert sealed.startswith(b'"sealed:1:') and b"4111" not in sealed
    assert is_packed(msgspec.Raw(sealed)) and not is_packed(msgspec.Raw(RAW))
    assert p.unpack(sealed, "charge", "jid1") == RAW
    # Each seal has its own nonce: the same arguments never look the same twice.
    assert p.pack(RAW, "charge", "jid1", seal=True, compress_over=None) != sealed
    for job, jid in (("charge", "jid2"), ("refund", "jid1")):
        with pytest.raises(DecryptionError, match="fail authentication") as info:
            p.unpack(sealed, job, jid)
        assert info.value.reason == "tampered"


def test_a_flipped_byte_is_refused_as_tampered() -> None:
    p = packer()
    sealed = p.pack(RAW, "charge", "jid1", seal=True, compress_over=None)
    text = json.loads(sealed)
    blob = bytearray(base64.b64decode(text.rsplit(":", 1)[1]))
    blob[20] ^= 1
    forged = json.dumps("sealed:1:" + base64.b64encode(bytes(blob)).decode()).encode()
    with pytest.raises(DecryptionError) as info:
        p.unpack(forged, "charge", "jid1")
    assert info.value.reason == "tampered"
    assert isinstance(info.value, PayloadError)


def test_keys_rotate_newest_seals_older_still_open() -> None:
    old = packer({1: K1})
    sealed_v1 = old.pack(RAW, "j", "x", seal=True, compress_over=None)
    both = packer({2: K2, 1: K1})
    assert both.unpack(sealed_v1, "j", "x") == RAW
    sealed_v2 = both.pack(RAW, "j", "x", seal=True, compress_over=None)
    assert sealed_v2.startswith(b'"sealed:2:')
    only_new = packer({2: K2})
    with pytest.raises(DecryptionError, match="key version 1, which this worker") as info:
        only_new.unpack(sealed_v1, "j", "x")
    assert info.value.reason == "no_key"
    assert "its versions: 2" in str(info.value)
    with pytest.raises(DecryptionError) as info:
        Packer(None, None).unpack(sealed_v1, "j", "x")
    assert info.value.reason == "no_key" and "its versions: none" in str(info.value)


def test_without_cryptography_opening_is_refused_and_sealing_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sealed = packer().pack(RAW, "j", "x", seal=True, compress_over=None)
    # As if the package were not installed: importing it fails.
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    fresh = packer()  # no cipher built yet
    with pytest.raises(DecryptionError, match=r"pip install 'asyncjobs-redis\[crypto\]'") as info:
        fresh.unpack(sealed, "j", "x")
    assert info.value.reason == "no_cryptography"
    with pytest.raises(ConfigError, match="needs the cryptography package"):
        fresh.pack(RAW, "j", "x", seal=True, compress_over=None)


def test_compression_over_the_threshold_only_and_only_when_smaller() -> None:
    p = packer(compress_over=100)
    big = json.dumps({"rows": [{"name": "alpha", "n": i} for i in range(200)]}).encode()
    packed = p.pack(big, "j", "x", seal=False, compress_over=100)
    assert packed.startswith(b'"zlib:') and len(packed) < len(big) // 3
    assert p.unpack(packed, "j", "x") == big
    assert display_args(msgspec.Raw(packed)) == json.loads(big)
    assert p.pack(RAW, "j", "x", seal=False, compress_over=100) == RAW  # under it
    noise = json.dumps({"b": base64.b64encode(os.urandom(3000)).decode()}).encode()
    assert p.pack(noise, "j", "x", seal=False, compress_over=100) == noise  # no gain
    # Sealed and compressed: compressed inside the seal, opened back whole.
    sealed = p.pack(big, "j", "x", seal=True, compress_over=100)
    assert len(sealed) < len(big) // 2
    assert p.unpack(sealed, "j", "x") == big


def test_display_never_opens_a_seal() -> None:
    sealed = packer().pack(RAW, "j", "x", seal=True, compress_over=None)
    assert display_args(msgspec.Raw(sealed)) == ENCRYPTED
    assert display_args(msgspec.Raw(RAW)) == json.loads(RAW)
    damaged = b'"zlib:' + base64.b64encode(b"not zlib") + b'"'
    assert display_args(msgspec.Raw(damaged)).startswith("<undecodable compressed arguments")
    with pytest.raises(PayloadError, match="do not decompress"):
        Packer(None, None).unpack(damaged, "j", "x")


def test_a_decompression_bomb_is_refused() -> None:
    bomb = b'"zlib:' + base64.b64encode(zlib.compress(b"[" + b" " * (70 << 20) + b"]")) + b'"'
    with pytest.raises(PayloadError, match="inflate past"):
        Packer(None, None).unpack(bomb, "j", "x")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "no key given"),
        ({0: K1}, "key versions must be whole numbers from 1"),
        ({True: K1}, "key versions must be whole numbers from 1"),
        ({1: b"short"}, "key version 1 is 5 bytes; AES-256 needs 32"),
        ({1: "not base64!"}, "key version 1 is not valid base64"),
        ({1: 12345}, "must be 32 bytes or their base64, got int"),
        (f"1:{B1},1:{B2}", "key version 1 is given twice"),
        ("abc", "without a colon"),
        ([K1], "expected a mapping"),
    ],
)
def test_bad_keys_are_one_line_config_errors(keys: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        asyncjobs.App(NO_REDIS, encryption_keys=keys)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    for key in (K1, base64.b64encode(K1)):
        assert key.decode(errors="replace") not in str(info.value)


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    k1, k2 = generate_key(), generate_key()
    assert len(base64.b64decode(k1)) == 32
    monkeypatch.setenv(KEYS_ENV, f"2:{k2}, 1:{k1}")
    app = asyncjobs.App(NO_REDIS)
    assert app.packer.keyring is not None
    assert app.packer.keyring.newest == 2
    assert sorted(app.packer.keyring.keys) == [1, 2]
    assert k1 not in repr(app.packer.keyring)
    # An explicit argument wins over the environment.
    assert asyncjobs.App(NO_REDIS, encryption_keys={7: K1}).packer.keyring.newest == 7  # type: ignore[union-attr]
    monkeypatch.setenv(KEYS_ENV, "1:tooshort")
    with pytest.raises(ConfigError, match=f"^{KEYS_ENV}: key version 1 is"):
        asyncjobs.App(NO_REDIS)


@pytest.mark.parametrize("value", [-1, True, 1.5, "16k"])
def test_bad_compress_over_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="compress_over must be a number of bytes"):
        asyncjobs.App(NO_REDIS, compress_over=value)  # type: ignore[arg-type]


async def test_encrypt_without_keys_is_refused_at_defer_not_at_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    app = asyncjobs.App(NO_REDIS)

    @app.job(encrypt=True)  # the CLI and dashboard import jobs without the keys
    async def charge(card: str) -> None: ...

    with pytest.raises(ConfigError, match="encrypt=True needs encryption keys") as info:
        await charge.defer("4111")
    assert "\n" not in str(info.value)


def test_job_options_are_checked_at_registration() -> None:
    app = asyncjobs.App(NO_REDIS, compress_over=1000)

    async def f() -> None: ...

    with pytest.raises(ConfigError, match="encrypt must be True or False"):
        app.job(name="a", encrypt="yes")(f)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="compress must be True, False or None"):
        app.job(name="b", compress=1)(f)  # type: ignore[call-overload]
    assert app.job(name="c")(f).compress_over == 1000
    assert app.job(name="d", compress=False)(f).compress_over is None
    plain = asyncjobs.App(NO_REDIS)
    assert plain.job(name="e")(f).compress_over is None
    assert plain.job(name="g", compress=True)(f).compress_over == 16 * 1024
    # default_job_options carries them like any option.
    both = asyncjobs.App(NO_REDIS, default_job_options={"encrypt": True})
    assert both.job(name="h")(f).encrypt is True


def test_periodic_entries_of_encrypted_jobs_take_no_args() -> None:
    app = asyncjobs.App(NO_REDIS, encryption_keys={1: K1})

    @app.job(encrypt=True)
    async def report(secret: str = "") -> None: ...

    with pytest.raises(ConfigError, match="args are stored unencrypted"):
        app.periodic(report, "0 3 * * *", args={"secret": "s3cret"})
    app.periodic(report, "0 4 * * *", name="no-args")


def test_keyring_repr_shows_versions_not_keys() -> None:
    ring = Keyring({1: K1, 3: K2})
    assert repr(ring) == "<Keyring versions=[1, 3] newest=3>"


def test_zstd_compresses_alone_and_inside_a_seal() -> None:
    p = Packer.configure({1: K1}, 100, "zstd")
    big = json.dumps({"rows": [{"name": "alpha", "n": i} for i in range(200)]}).encode()
    packed = p.pack(big, "j", "x", seal=False, compress_over=100)
    assert packed.startswith(b'"zstd:') and len(packed) < len(big) // 3
    assert p.unpack(packed, "j", "x") == big
    assert display_args(msgspec.Raw(packed)) == json.loads(big)
    sealed = p.pack(big, "j", "x", seal=True, compress_over=100)
    assert len(sealed) < len(big) // 2 and p.unpack(sealed, "j", "x") == big
    # A zlib app's worker reads zstd too (the codec travels with the arguments).
    assert Packer.configure({1: K1}, None).unpack(sealed, "j", "x") == big


def test_a_zstd_bomb_is_refused_whatever_size_its_frame_declares() -> None:
    import zstandard

    frame = zstandard.ZstdCompressor(level=1).compress(b"[" + b" " * (70 << 20) + b"]")
    bomb = b'"zstd:' + base64.b64encode(frame) + b'"'
    with pytest.raises(PayloadError, match="inflate past"):
        Packer(None, None).unpack(bomb, "j", "x")


def test_without_zstandard_zstd_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    p = Packer.configure(None, 100, "zstd")
    big = b'{"a":"' + b"x" * 1000 + b'"}'
    packed = p.pack(big, "j", "x", seal=False, compress_over=100)
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(PayloadError, match=r"pip install 'asyncjobs-redis\[zstd\]'"):
        p.unpack(packed, "j", "x")
    with pytest.raises(ConfigError, match="compression='zstd' needs the zstandard package"):
        p.pack(big, "j", "x", seal=False, compress_over=100)
    assert display_args(msgspec.Raw(packed)).startswith("<undecodable compressed arguments")


def test_an_unknown_compression_is_refused() -> None:
    with pytest.raises(ConfigError, match="compression must be 'zlib' .* or 'zstd', got 'lz4'"):
        asyncjobs.App(NO_REDIS, compression="lz4")
