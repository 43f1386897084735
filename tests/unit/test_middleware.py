"""The middleware chain (pure): order, no duplicates, insert before/after, remove."""

from __future__ import annotations

import pytest

from asyncjobs import Chain


def a() -> None: ...
def b() -> None: ...
def c() -> None: ...


def test_add_appends_and_moves_an_entry_already_there() -> None:
    chain: Chain[object] = Chain()
    chain.add(a)
    chain.add(b)
    chain.add(a)  # no duplicate: moved to the end, as Sidekiq's add
    assert list(chain) == [b, a]
    assert len(chain) == 2 and a in chain and c not in chain


def test_prepend_insert_before_after_remove() -> None:
    chain: Chain[object] = Chain([a])
    chain.prepend(b)
    assert list(chain) == [b, a]
    chain.insert_after(b, c)
    assert list(chain) == [b, c, a]
    chain.insert_before(b, a)
    assert list(chain) == [a, b, c]
    chain.remove(b)
    chain.remove(b)  # absent: nothing happens
    assert list(chain) == [a, c]
    with pytest.raises(ValueError, match="not in this chain"):
        chain.insert_before(b, c)


def test_entries_is_a_snapshot_refreshed_after_changes() -> None:
    chain: Chain[object] = Chain([a, b])
    first = chain.entries
    assert list(first) == [a, b]
    assert chain.entries is first  # cached while unchanged
    chain.append(c)  # list-like alias of add
    assert list(chain.entries) == [a, b, c] and list(first) == [a, b]
    copied = chain.copy()
    chain.clear()
    assert len(chain) == 0 and not chain.entries
    assert list(copied) == [a, b, c]
