"""asyncjobs: asyncio-native background jobs on Redis, Sidekiq's model made for Python."""

from ._app import App as App
from ._batch import BatchStatus as BatchStatus
from ._batch import Signature as Signature
from ._batching import Batch as Batch
from ._errors import ArgumentError as ArgumentError
from ._errors import AsyncJobsError as AsyncJobsError
from ._errors import BatchError as BatchError
from ._errors import ConfigError as ConfigError
from ._errors import DecryptionError as DecryptionError
from ._errors import EnqueueError as EnqueueError
from ._errors import JobTimeout as JobTimeout
from ._errors import NotReplicated as NotReplicated
from ._errors import PayloadError as PayloadError
from ._errors import RedisRefused as RedisRefused
from ._errors import RedisUnavailable as RedisUnavailable
from ._errors import UniqueConflict as UniqueConflict
from ._errors import UnknownJobError as UnknownJobError
from ._job import Deferrer as Deferrer
from ._job import Job as Job
from ._job import JobContext as JobContext
from ._job import JobHandle as JobHandle
from ._job import current_job as current_job
from ._limits import LimiterState as LimiterState
from ._limits import OverLimit as OverLimit
from ._logging import JobContextFilter as JobContextFilter
from ._logging import JsonFormatter as JsonFormatter
from ._middleware import Chain as Chain
from ._payload import Payload as Payload
from ._retry import Permanent as Permanent
from ._settings import CapsuleSpec as CapsuleSpec
from ._status import JobCancelled as JobCancelled
from ._status import JobFailed as JobFailed
from ._status import JobStatus as JobStatus
from ._status import Progress as Progress
from ._unique import Unique as Unique
from ._version import __version__ as __version__
from ._worker.launcher import Worker as Worker
from ._worker.limits import Lease as Lease
from ._worker.limits import Limiter as Limiter
from ._worker.shield import shield as shield
from .iteration import Iteration as Iteration

__all__ = [
    "App",
    "ArgumentError",
    "AsyncJobsError",
    "Batch",
    "BatchError",
    "BatchStatus",
    "CapsuleSpec",
    "Chain",
    "ConfigError",
    "DecryptionError",
    "Deferrer",
    "EnqueueError",
    "Iteration",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobContextFilter",
    "JobFailed",
    "JobHandle",
    "JobStatus",
    "JobTimeout",
    "JsonFormatter",
    "Lease",
    "Limiter",
    "LimiterState",
    "NotReplicated",
    "OverLimit",
    "Payload",
    "Permanent",
    "PayloadError",
    "Progress",
    "RedisRefused",
    "RedisUnavailable",
    "Signature",
    "Unique",
    "UniqueConflict",
    "UnknownJobError",
    "Worker",
    "__version__",
    "current_job",
    "shield",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and _name != "__version__":
        try:
            _obj.__module__ = "asyncjobs"
        except (AttributeError, TypeError):
            pass
del _name, _obj
