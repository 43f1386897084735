"""Per-job metrics (``App(metrics=True)``): the arguments the acknowledgement scripts
take to count them, and the reads of ``asyncjobs.api``'s metrics functions.

The writes add no call: :func:`metrics_args` appends two keys and the increments to the
``done.lua``/``ack.lua`` call the acker makes anyway (see ``_metrics.py`` for the
fields).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._keys import Keys
from .._metrics import MINUTE_TTL, Recorder, minute_stamp
from ._base import StoreBase, mapped

__all__ = ["MetricsOps", "metrics_args"]


def metrics_args(
    keys: Keys, now: float, recorder: Recorder, last_key: str, token: str
) -> tuple[list[str], list[Any]]:
    """The keys and arguments to append to an acknowledgement script's call: the
    increments of ``recorder``, written once under ``token`` (``last_key`` keeps the
    process's last one)."""
    minute, total = recorder.increments()
    args: list[Any] = []
    for d in (minute, total):
        for field, n in d.items():
            args.extend((field, n))
    args.extend((token, MINUTE_TTL, len(minute), len(total)))
    return [keys.metrics_minute(minute_stamp(now)), keys.metrics_total, last_key], args


def _decode(raw: dict[Any, Any]) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}


class MetricsOps(StoreBase):
    """Reads of the per-job metrics."""

    @mapped
    async def metrics_minutes(self, stamps: Sequence[str]) -> list[dict[str, int]]:
        """The minute hashes of ``stamps`` (``YYMMDDHHMM``), in one round trip."""
        if not stamps:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for s in stamps:
                pipe.hgetall(self.keys.metrics_minute(s))
            res: list[Any] = await pipe.execute()
        return [_decode(r or {}) for r in res]

    @mapped
    async def metrics_totals(self) -> dict[str, int]:
        """The totals hash: every counter since the beginning."""
        return _decode(await self.client.hgetall(self.keys.metrics_total))
