"""The introspection and admin API: queues, scheduled, retries, dead, processes, stats.

The CLI and any dashboard use this module, never raw keys. Every call takes an
:class:`asyncjobs.App` (only its Redis URL and namespace matter: no job code is needed).

```python
from asyncjobs import api

stats = await api.Stats.fetch(app)
for q in await api.queues(app):
    print(q.name, q.size, q.latency)
dead = api.DeadSet(app)
for entry in await dead.entries(limit=20):
    print(entry.jid, entry.error_class, entry.error_message)
await dead.retry(entry.jid)
```
"""

# Imported in the order the reference docs list them (members_order: source).
# isort: off
from ._records import JobNotFound as JobNotFound
from ._records import JobRecord as JobRecord
from ._records import InvalidArgument as InvalidArgument
from ._queues import QueueInfo as QueueInfo
from ._queues import queues as queues
from ._queues import queue_entries as queue_entries
from ._queues import clear_queue as clear_queue
from ._queues import find_queued as find_queued
from ._queues import delete_queued as delete_queued
from ._sets import Page as Page
from ._sets import SortedSet as SortedSet
from ._sets import ScheduledSet as ScheduledSet
from ._sets import RetrySet as RetrySet
from ._sets import DeadSet as DeadSet
from ._sets import find_job as find_job
from ._processes import ProcessInfo as ProcessInfo
from ._processes import ProcessSet as ProcessSet
from ._processes import WorkItem as WorkItem
from ._jobs import JobLocation as JobLocation
from ._jobs import locate_job as locate_job
from ._status import cancel_job as cancel_job
from ._status import job_status as job_status
from ._status import status_dict as status_dict
from ._stats import Stats as Stats
from ._flow import UniqueLock as UniqueLock
from ._flow import pause_queue as pause_queue
from ._flow import resume_queue as resume_queue
from ._flow import paused_queues as paused_queues
from ._flow import unique_lock as unique_lock
from ._periodic import PeriodicInfo as PeriodicInfo
from ._periodic import PeriodicRun as PeriodicRun
from ._periodic import PeriodicNotFound as PeriodicNotFound
from ._periodic import periodic_entries as periodic_entries
from ._periodic import pause_periodic as pause_periodic
from ._periodic import resume_periodic as resume_periodic
from ._periodic import run_periodic as run_periodic
from ._periodic import remove_periodic as remove_periodic
from ._periodic import clear_periodic as clear_periodic
from ._limits import limiter_state as limiter_state
from ._limits import limiters as limiters
from ._stats import history as history
from ._stats import reset_stats as reset_stats
from ._batches import batch_dict as batch_dict
from ._batches import batch_status as batch_status
from ._batches import BatchPage as BatchPage
from ._batches import batches as batches
from ._stats import RedisInfo as RedisInfo
from ._stats import redis_info as redis_info
from ._metrics import JobMetrics as JobMetrics
from ._metrics import MetricsPoint as MetricsPoint
from ._metrics import MetricsReport as MetricsReport
from ._metrics import MetricsTotals as MetricsTotals
from ._metrics import MetricCounts as MetricCounts
from ._metrics import MetricHistogram as MetricHistogram
from ._metrics import job_metrics as job_metrics
from ._metrics import metrics_totals as metrics_totals
# isort: on

__all__ = [
    "InvalidArgument",
    "batch_dict",
    "batch_status",
    "batches",
    "BatchPage",
    "DeadSet",
    "JobLocation",
    "JobMetrics",
    "MetricCounts",
    "MetricHistogram",
    "MetricsPoint",
    "MetricsReport",
    "MetricsTotals",
    "JobNotFound",
    "JobRecord",
    "Page",
    "PeriodicInfo",
    "PeriodicNotFound",
    "PeriodicRun",
    "ProcessInfo",
    "ProcessSet",
    "RedisInfo",
    "QueueInfo",
    "RetrySet",
    "ScheduledSet",
    "SortedSet",
    "Stats",
    "UniqueLock",
    "WorkItem",
    "cancel_job",
    "clear_periodic",
    "clear_queue",
    "delete_queued",
    "find_job",
    "find_queued",
    "limiter_state",
    "limiters",
    "history",
    "job_metrics",
    "job_status",
    "locate_job",
    "metrics_totals",
    "pause_periodic",
    "pause_queue",
    "paused_queues",
    "periodic_entries",
    "queue_entries",
    "queues",
    "redis_info",
    "remove_periodic",
    "reset_stats",
    "resume_periodic",
    "status_dict",
    "resume_queue",
    "run_periodic",
    "unique_lock",
]

# Every public name claims asyncjobs.api as its home (reprs, pickling, the docs), as
# when this was one module; the submodules are how the code is laid out, not an API.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
