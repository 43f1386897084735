"""--max-memory: sizes parsed (and refused) as documented, and the check's behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncjobs import ConfigError
from asyncjobs._settings import load_settings, parse_size
from asyncjobs._worker.heartbeat import rss_kib
from asyncjobs._worker.memory import MemoryLimit


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("500MB", 500 * 1000**2),
        ("800M", 800 * 1024**2),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("1.5Gi", 3 * 1024**3 // 2),
        ("2G", 2 * 1024**3),
        ("1gb", 1000**3),
        (" 300 MiB ", 300 * 1024**2),
        ("65536KiB", 64 * 1024**2),
        ("20000000B", 20_000_000),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("500", "(a number needs a unit)"),
        ("", "a size such as 500MB"),
        ("-5MB", "a size such as 500MB"),
        ("5 XB", "a size such as 500MB"),
        ("MB", "a size such as 500MB"),
        ("1MB", "less than any Python worker needs"),
    ],
)
def test_parse_size_refuses(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="--max-memory") as info:
        parse_size(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.timeout(10)
def test_settings_file_key(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text('max_memory = "1GiB"\n')
    assert load_settings(path).max_memory == "1GiB"
    path.write_text("max_memory = 500\n")
    with pytest.raises(ConfigError, match="max_memory"):
        load_settings(path)


@pytest.mark.timeout(10)
def test_check_calls_over_once_above_the_limit() -> None:
    readings = iter([100, 200, 201, 50, 300])
    seen: list[int] = []
    limit = MemoryLimit(200, interval=1.0, over=seen.append, rss=lambda: next(readings))
    assert [limit.check() for _ in range(5)] == [False, False, True, False, True]
    assert seen == [201]  # one warning, however long it stays over
    assert limit.tripped


@pytest.mark.timeout(10)
def test_default_reading_is_this_process_rss() -> None:
    limit = MemoryLimit(1, interval=1.0, over=lambda rss: None)
    assert limit.check()  # any live process is over one byte
    assert rss_kib() > 1024  # a Python process holds more than a MiB
