"""Sealed (encrypted) and compressed job arguments (#15) (pure).

A job's arguments are a JSON object (``Job.encode_args``). Two options change how they
are stored, at ``defer`` (``Job._build``), and are undone where arguments are decoded
(the executor, ``asyncjobs.testing``):

- **compressed** (``App(compress_over=N)``, ``@app.job(compress=...)``): arguments over
  ``N`` bytes are stored as the JSON string ``"zlib:<base64 of zlib(JSON)>"`` (or
  ``"zstd:..."`` with ``App(compression="zstd")``), when that is smaller;
- **sealed** (``@app.job(encrypt=True)``): AES-256-GCM under the newest key of the
  app's keyring, stored as ``"sealed:<key version>:<base64 of nonce, ciphertext,
  tag>"``. The plaintext is one byte (``j``: JSON follows; ``z``: zlib-compressed JSON;
  ``s``: zstd-compressed JSON) and the arguments; the associated data is the job's name
  and jid, so a blob copied into another job or another jid fails authentication.

Plain arguments are always a JSON object, so a string in ``args`` cannot be mistaken
for them: a worker decodes the plain form first and opens only what fails that decode
as a string (a job with neither option pays nothing). A worker older than this feature
finds that such arguments do not fit the job and sends it to the dead set: it never
runs a job with wrong arguments.

``cryptography`` (the ``crypto`` extra) and ``zstandard`` (the ``zstd`` extra) are
imported on first use only.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import zlib
from collections.abc import Mapping
from typing import Any

import msgspec

from ._errors import ConfigError, DecryptionError, PayloadError

__all__ = [
    "COMPRESS_OVER",
    "ENCRYPTED",
    "KEYS_ENV",
    "Keyring",
    "Packer",
    "display_args",
    "generate_key",
    "is_compressed",
    "is_packed",
]

KEYS_ENV = "ASYNCJOBS_ENCRYPTION_KEYS"
# What display surfaces (API, CLI, dashboard) show instead of sealed arguments.
ENCRYPTED = "<encrypted>"
# The threshold compress=True uses when the app sets none (App(compress_over=None)).
COMPRESS_OVER = 16 * 1024
# zlib's default level: on a 100 KB JSON argument it stores 18% of the bytes; zstd's
# level 3 stores 19% ten times faster (docs/concepts/encryption.md has the figures).
ZLIB_LEVEL = 6
ZSTD_LEVEL = 3
CODECS = ("zlib", "zstd")
# A compressed argument never inflates past this (a damaged or hostile payload cannot
# make a worker allocate more).
MAX_PLAIN = 64 << 20

_SEALED = b'"sealed:'
_PACKED = (b'"zlib:', b'"zstd:')
# The byte before sealed arguments: how they were compressed before sealing.
_HEAD = {"zlib": b"z", "zstd": b"s"}
_CODEC_OF_HEAD = {b"z": "zlib", b"s": "zstd"}
_NONCE = 12  # 96-bit random nonces: rotate a key before 2**32 jobs sealed under it
_KEY_BYTES = 32  # AES-256
_INSTALL = "pip install 'asyncjobs-redis[crypto]'"
_INSTALL_ZSTD = "pip install 'asyncjobs-redis[zstd]'"


def _aesgcm() -> Any:
    """cryptography's AESGCM class; ImportError if the package is not installed."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM


def generate_key() -> str:
    """A new random 256-bit key, base64-encoded (``asyncjobs keygen``)."""
    return base64.b64encode(os.urandom(_KEY_BYTES)).decode("ascii")


def _key_bytes(version: int, value: object, source: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        key = bytes(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            try:
                key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(
                    f"{source}: key version {version} is not valid base64; make one with "
                    "`asyncjobs keygen`"
                ) from None
    else:
        raise ConfigError(
            f"{source}: key version {version} must be 32 bytes or their base64, "
            f"got {type(value).__name__}"
        )
    if len(key) != _KEY_BYTES:
        # The length only: a key's bytes never appear in a message.
        raise ConfigError(
            f"{source}: key version {version} is {len(key)} bytes; AES-256 needs 32 "
            "(`asyncjobs keygen` makes one)"
        )
    return key


def _version(value: object, source: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
        raise ConfigError(
            f"{source}: key versions must be whole numbers from 1, got {value!r}: "
            "give {version: key}, the newest (highest) version seals"
        )
    return value


class Keyring:
    """Versioned AES-256 keys: the newest (highest) version seals; every version
    configured opens what it sealed, so keys rotate without a flag day."""

    __slots__ = ("_ciphers", "keys", "newest")

    def __init__(self, keys: Mapping[int, bytes]) -> None:
        self.keys = dict(keys)
        self.newest = max(self.keys)
        self._ciphers: dict[int, Any] = {}

    @classmethod
    def parse(cls, keys: Mapping[Any, Any] | str, source: str) -> Keyring:
        """From ``{version: key}`` (32 bytes, or base64) or ``"2:<base64>,1:<base64>"``
        (the environment's form). :class:`ConfigError` on anything else."""
        pairs: list[tuple[object, object]]
        if isinstance(keys, str):
            pairs = []
            for item in keys.split(","):
                if not item.strip():
                    continue
                version, sep, key = item.partition(":")
                if not sep:
                    raise ConfigError(
                        f"{source}: expected version:base64key pairs separated by commas "
                        "(2:...,1:...), got an item without a colon"
                    )
                pairs.append((version, key))
        elif isinstance(keys, Mapping):
            pairs = list(keys.items())
        else:
            raise ConfigError(
                f"{source}: expected a mapping {{version: key}}, got {type(keys).__name__}"
            )
        if not pairs:
            raise ConfigError(f"{source}: no key given; `asyncjobs keygen` makes one")
        parsed: dict[int, bytes] = {}
        for given, value in pairs:
            v = _version(given, source)
            if v in parsed:
                raise ConfigError(f"{source}: key version {v} is given twice")
            parsed[v] = _key_bytes(v, value, source)
        return cls(parsed)

    def cipher(self, version: int) -> Any:
        """The AESGCM of a key version (built once). KeyError: no such version;
        ImportError: no cryptography."""
        c = self._ciphers.get(version)
        if c is None:
            key = self.keys[version]
            c = self._ciphers[version] = _aesgcm()(key)
        return c

    def __repr__(self) -> str:  # never the keys
        return f"<Keyring versions={sorted(self.keys)} newest={self.newest}>"


def _aad(job: str, jid: str) -> bytes:
    return b"asyncjobs\x00" + job.encode() + b"\x00" + jid.encode()


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PayloadError(f"{what} are not valid base64: {exc}") from None


def _zstd() -> Any:
    """The zstandard module; ImportError if the package is not installed."""
    import zstandard

    return zstandard


def _compress(raw: bytes, codec: str) -> bytes:
    if codec == "zstd":
        return bytes(_zstd().ZstdCompressor(level=ZSTD_LEVEL).compress(raw))
    return zlib.compress(raw, ZLIB_LEVEL)


def _decompress(data: bytes, codec: str, what: str) -> bytes:
    """Decompressed ``data``, never more than ``MAX_PLAIN`` bytes: a stream read with a
    bound (zstandard's one-shot decompress trusts the size a frame declares)."""
    if codec == "zstd":
        try:
            zstandard = _zstd()
        except ImportError:
            raise PayloadError(
                f"{what} are compressed with zstd and the zstandard package is not "
                f"installed in this worker: {_INSTALL_ZSTD}, then retry the job"
            ) from None
        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
                out: bytes = reader.read(MAX_PLAIN + 1)
        except zstandard.ZstdError as exc:
            raise PayloadError(f"{what} do not decompress: {exc}") from None
        if len(out) > MAX_PLAIN:
            raise PayloadError(f"{what} inflate past {MAX_PLAIN} bytes; refused")
        return out
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_PLAIN)
    except zlib.error as exc:
        raise PayloadError(f"{what} do not decompress: {exc}") from None
    if d.unconsumed_tail:
        raise PayloadError(f"{what} inflate past {MAX_PLAIN} bytes; refused")
    return out


def is_packed(args: bytes | msgspec.Raw) -> bool:
    """Whether stored arguments are sealed or compressed (a JSON string)."""
    return memoryview(args)[:1].tobytes() == b'"'


_COMPRESSED_ARGS = ('"args":"zlib:', '"args":"zstd:')


def is_compressed(raw: str) -> bool:
    """Whether a stored payload (as text) has compressed arguments."""
    return any(marker in raw for marker in _COMPRESSED_ARGS)


class Packer:
    """An app's keyring and compression threshold: packs arguments at ``defer``,
    unpacks them in the worker."""

    __slots__ = ("compress_over", "compression", "keyring")

    def __init__(
        self, keyring: Keyring | None, compress_over: int | None, compression: str = "zlib"
    ) -> None:
        self.keyring = keyring
        self.compress_over = compress_over
        self.compression = compression

    @classmethod
    def configure(
        cls,
        keys: Mapping[Any, Any] | str | None,
        compress_over: int | None,
        compression: str = "zlib",
        *,
        source: str = "encryption_keys",
    ) -> Packer:
        """From ``App(encryption_keys=..., compress_over=..., compression=...)``:
        ConfigError if bad."""
        if compression not in CODECS:
            raise ConfigError(
                f"compression must be 'zlib' (the default) or 'zstd', got {compression!r}"
            )
        bad = isinstance(compress_over, bool) or not isinstance(compress_over, int)
        if compress_over is not None and (bad or compress_over < 0):
            raise ConfigError(
                f"compress_over must be a number of bytes >= 0 or None (off), got {compress_over!r}"
            )
        keyring = None if keys is None else Keyring.parse(keys, source)
        return cls(keyring, compress_over, compression)

    # -- defer ---------------------------------------------------------------------

    def pack(
        self, raw: bytes, job: str, jid: str, *, seal: bool, compress_over: int | None
    ) -> bytes:
        """The stored form of the JSON arguments ``raw``: sealed if ``seal``, compressed
        if over ``compress_over`` bytes (and smaller so), else ``raw`` itself."""
        if seal:
            keyring = self.keyring
            if keyring is None:
                raise ConfigError(
                    f"job {job}: encrypt=True needs encryption keys: App(encryption_keys=...) "
                    f"or {KEYS_ENV} (`asyncjobs keygen` makes a key); nothing was enqueued"
                )
            body = b"j" + raw
            if compress_over is not None and len(raw) > compress_over:
                packed = self._compress(raw, job)
                if len(packed) < len(raw):
                    body = _HEAD[self.compression] + packed
            try:
                cipher = keyring.cipher(keyring.newest)
            except ImportError:
                raise ConfigError(
                    f"job {job}: encrypt=True needs the cryptography package: {_INSTALL}"
                ) from None
            nonce = os.urandom(_NONCE)
            sealed = cipher.encrypt(nonce, body, _aad(job, jid))
            return b'"sealed:%d:%s"' % (keyring.newest, _b64(nonce + sealed))
        if compress_over is not None and len(raw) > compress_over:
            codec = self.compression
            packed = b'"%s:%s"' % (codec.encode(), _b64(self._compress(raw, job)))
            if len(packed) < len(raw):
                return packed
        return raw

    def _compress(self, raw: bytes, job: str) -> bytes:
        try:
            return _compress(raw, self.compression)
        except ImportError:
            raise ConfigError(
                f"job {job}: compression='zstd' needs the zstandard package: {_INSTALL_ZSTD}"
            ) from None

    # -- worker --------------------------------------------------------------------

    def unpack(self, args: bytes, job: str, jid: str) -> bytes:
        """The JSON arguments of packed ``args``. Raises :class:`DecryptionError` for
        sealed arguments that cannot be opened, :class:`PayloadError` for damaged
        ones."""
        try:
            text = msgspec.json.decode(args, type=str)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PayloadError(f"arguments are neither an object nor packed: {exc}") from None
        kind, _, rest = text.partition(":")
        if kind in CODECS:
            what = "compressed arguments"
            return _decompress(_unb64(rest, what), kind, what)
        if kind != "sealed":
            raise PayloadError(
                f"arguments are a string of unknown kind {kind[:20]!r}, not an object"
            )
        version_text, _, blob = rest.partition(":")
        if not version_text.isdigit():
            raise DecryptionError("sealed arguments carry no key version", "malformed")
        version = int(version_text)
        keyring = self.keyring
        if keyring is None or version not in keyring.keys:
            have = "none" if keyring is None else ", ".join(map(str, sorted(keyring.keys)))
            raise DecryptionError(
                f"arguments sealed with key version {version}, which this worker does not "
                f"have (its versions: {have}); configure it in encryption_keys or {KEYS_ENV}, "
                "then retry the job from the dead set",
                "no_key",
            )
        try:
            cipher = keyring.cipher(version)
        except ImportError:
            raise DecryptionError(
                f"arguments are sealed and the cryptography package is not installed in "
                f"this worker: {_INSTALL}, then retry the job from the dead set",
                "no_cryptography",
            ) from None
        data = _unb64(blob, "sealed arguments")
        if len(data) < _NONCE + 16 + 1:
            raise DecryptionError("sealed arguments are too short to hold a tag", "malformed")
        from cryptography.exceptions import InvalidTag

        try:
            body: bytes = cipher.decrypt(data[:_NONCE], data[_NONCE:], _aad(job, jid))
        except InvalidTag:
            raise DecryptionError(
                f"sealed arguments fail authentication with key version {version}: they "
                "were altered, or copied from another job or jid; refused",
                "tampered",
            ) from None
        head, plain = body[:1], body[1:]
        codec = _CODEC_OF_HEAD.get(head)
        if codec is not None:
            return _decompress(plain, codec, "sealed compressed arguments")
        if head != b"j":
            raise DecryptionError("sealed arguments have an unknown inner format", "malformed")
        return plain


def display_args(args: bytes | msgspec.Raw) -> Any:
    """Arguments as a reader sees them (API, CLI, dashboard), never opening a seal:
    plain and compressed ones decoded, sealed ones as ``"<encrypted>"``."""
    data = bytes(args)
    if data[:1] != b'"':
        return json.loads(data)
    if data.startswith(_SEALED):
        return ENCRYPTED
    if data.startswith(_PACKED):
        try:
            return json.loads(Packer(None, None).unpack(data, "", ""))
        except (PayloadError, ValueError) as exc:
            return f"<undecodable compressed arguments: {exc}>"
    return json.loads(data)


def unpack(packer: Packer, args: msgspec.Raw, job: str, jid: str, error: Exception) -> bytes:
    """The JSON arguments of a payload whose arguments failed to decode with
    ``error``: opened if packed; ``error`` raised again if not (they do not fit)."""
    if not is_packed(args):
        raise error
    return packer.unpack(bytes(args), job, jid)


def plain_args(packer: Packer, args: msgspec.Raw, job: str, jid: str) -> bytes | msgspec.Raw:
    """A payload's arguments as JSON, opened if packed (a limiter's ``key_arg``)."""
    return packer.unpack(bytes(args), job, jid) if is_packed(args) else args


def startup_warnings(packer: Packer, encrypted: list[str]) -> list[str]:
    """What a starting worker should warn about: jobs it will not be able to open.
    ``encrypted`` names its jobs with ``encrypt=True``. Each message is one line."""
    out: list[str] = []
    shown = ", ".join(encrypted[:3]) + (f" and {len(encrypted) - 3} more" if encrypted[3:] else "")
    if encrypted and packer.keyring is None:
        out.append(
            f"jobs with encrypt=True ({shown}) but no encryption keys (encryption_keys or "
            f"{KEYS_ENV}): this worker sends their jobs to the dead set"
        )
    if packer.keyring is not None:
        try:
            _aesgcm()
        except ImportError:
            out.append(
                "encryption keys are configured but the cryptography package is not "
                f"installed: {_INSTALL}; this worker sends encrypted jobs to the dead set"
            )
    if packer.compression == "zstd" and packer.compress_over is not None:
        try:
            _zstd()
        except ImportError:
            out.append(
                "compression='zstd' but the zstandard package is not installed: "
                f"{_INSTALL_ZSTD}; deferring large jobs fails, zstd jobs go to the dead set"
            )
    return out
