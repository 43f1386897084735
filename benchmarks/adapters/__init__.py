"""One adapter per benchmarked system; see :mod:`benchmarks.adapters.base`.

Adapters are imported lazily, so a peer that is not installed only costs its own row.
"""

from __future__ import annotations

import importlib

from benchmarks.adapters.base import Adapter

#: system name -> "module:Class" of its adapter, in the table's order
SYSTEMS: dict[str, str] = {
    "asyncjobs": "benchmarks.adapters.asyncjobs:AsyncjobsAdapter",
    "asyncjobs-2p": "benchmarks.adapters.asyncjobs:AsyncjobsTwoProcessAdapter",
    "redis-py": "benchmarks.adapters.redis_py:RedisPyAdapter",
    "floor": "benchmarks.adapters.floor:FloorAdapter",
    "dramatiq": "benchmarks.adapters.dramatiq:DramatiqAdapter",
    "taskiq-stream": "benchmarks.adapters.taskiq:TaskiqStreamAdapter",
    "taskiq-list": "benchmarks.adapters.taskiq:TaskiqListAdapter",
    "arq": "benchmarks.adapters.arq:ArqAdapter",
    "saq": "benchmarks.adapters.saq:SaqAdapter",
    "streaq": "benchmarks.adapters.streaq:StreaqAdapter",
    "celery": "benchmarks.adapters.celery:CeleryAdapter",
    "rq": "benchmarks.adapters.rq:RqAdapter",
    "rq-simple": "benchmarks.adapters.rq:RqSimpleAdapter",
}

#: what ``--systems default`` (the default) runs: the issue's table
DEFAULT_SYSTEMS: tuple[str, ...] = tuple(s for s in SYSTEMS if s != "rq-simple")

#: systems that are not job runners (references, not peers)
FLOORS = frozenset({"redis-py", "floor"})
#: our own rows
OURS = frozenset({"asyncjobs", "asyncjobs-2p"})


def load_adapter(name: str) -> type[Adapter]:
    target = SYSTEMS[name]
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Adapter] = getattr(module, attr)
    return cls
