"""Rate limiters' reads and writes: each acquire, renew or release is one script call
(one round trip); a job without limits never comes here."""

from __future__ import annotations

from typing import Any

from .._limits import LimiterState, LimitSpec
from ._base import StoreBase, mapped

__all__ = ["LimitOps"]


def _reply(reply: Any) -> tuple[bool, float, float]:
    """(allowed, seconds until it would be, Redis's time in seconds)."""
    return bool(int(reply[0])), int(reply[1]) / 1000, int(reply[2]) / 1000


class LimitOps(StoreBase):
    """Acquire, renew and release rate limiters' slots; read their state."""

    def limit_key(self, name: str, key: str | None) -> str:
        return self.keys.limit(name, key)

    @mapped
    async def limit_acquire(
        self, spec: LimitSpec, key: str | None, token: str, cost: int = 1
    ) -> tuple[bool, float, float]:
        """Take ``cost`` from limiter ``spec`` (its slot ``key``): (allowed, seconds until
        it would be, Redis's time). ``token`` names a concurrent lease (for renew and
        release) or a sliding window's grants."""
        c = self.fast or self.client
        keys = [self.keys.limit(spec.name, key)]
        per = max(1, int(spec.per * 1000))
        s = self.scripts
        if spec.kind == "concurrent":
            args: list[Any] = ["acquire", token, spec.limit, max(1, int(spec.lease * 1000))]
            return _reply(await s.limit_concurrent(c, keys, args))
        if spec.kind == "window":
            mode = "sliding" if spec.sliding else "fixed"
            return _reply(await s.limit_window(c, keys, [mode, spec.limit, per, cost, token]))
        mode = "leaky" if spec.kind == "leaky" else "bucket"
        return _reply(await s.limit_bucket(c, keys, [mode, spec.limit, per, cost]))

    @mapped
    async def limit_renew(self, spec: LimitSpec, key: str | None, token: str) -> bool:
        """Extend a concurrent lease by ``spec.lease``; False if it was lost (expired and
        taken, or released)."""
        c = self.fast or self.client
        args = ["renew", token, spec.limit, max(1, int(spec.lease * 1000))]
        reply = await self.scripts.limit_concurrent(c, [self.keys.limit(spec.name, key)], args)
        return bool(int(reply[0]))

    @mapped
    async def limit_release(self, spec: LimitSpec, key: str | None, token: str) -> bool:
        """Give a concurrent lease back; False if it was not held any more."""
        c = self.fast or self.client
        keys = [self.keys.limit(spec.name, key)]
        return bool(await self.scripts.limit_concurrent(c, keys, ["release", token, 0, 0]))

    @mapped
    async def limit_state(self, spec: LimitSpec, key: str | None) -> LimiterState:
        """The limiter as it is now (read only: one script call, one round trip)."""
        k = self.keys.limit(spec.name, key)
        zset = spec.kind == "concurrent" or (spec.kind == "window" and spec.sliding)
        c = self.fast or self.client
        reply = await self.scripts.limit_read(c, [k], ["zset" if zset else "hash"])
        now = int(reply[0])
        flat = list(reply[1])
        pairs = list(zip(flat[0::2], flat[1::2], strict=True))
        raw: Any = [(m, float(v)) for m, v in pairs] if zset else dict(pairs)
        per = spec.per * 1000
        holders: dict[str, float] = {}
        used: float
        if spec.kind == "concurrent":
            for member, score in raw:
                if score > now:
                    holders[_text(member)] = round((score - now) / 1000, 3)
            used = len(holders)
        elif spec.kind == "window" and spec.sliding:
            used = sum(1 for _, score in raw if score > now - per)
        else:
            h = {_text(f): _text(v) for f, v in raw.items()}
            if spec.kind == "window":
                used = int(h.get("n", 0)) if h.get("w") == str(int(now // per)) else 0
            elif spec.kind == "leaky":
                tat = float(h.get("v", now))
                used = max(0.0, (tat - now) / (per / spec.limit))
            else:
                left = float(h.get("v", spec.limit))
                then = float(h.get("t", now))
                left = min(spec.limit, left + (now - then) * spec.limit / per)
                used = spec.limit - left
        used = round(used, 3)
        return LimiterState(
            name=spec.name,
            kind=spec.kind,
            key=key,
            limit=spec.limit,
            per=spec.per,
            used=used,
            available=round(spec.limit - used, 3),
            holders=holders,
        )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
