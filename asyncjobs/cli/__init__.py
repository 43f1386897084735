"""The ``asyncjobs`` command line (typer). Operator errors print one line, exit 2.

A package by area: ``_base`` holds the app and the entry point, ``_admin`` and ``_output``
what the admin commands share; each other module registers its commands on the app when
imported. The order of the imports below is the order of ``asyncjobs --help``.
"""

from __future__ import annotations

# isort: off
# Importing a module registers its commands: this order is the order of --help.
from . import worker as worker
from . import inspect as inspect
from . import jobs as jobs
from . import processes as processes
from . import check as check
from . import tools as tools
from . import observe as observe
from . import limits as limits
from . import periodic as periodic
from . import outbox as outbox
from . import batches as batches

# isort: on
from ._base import app, fail, load_app, main, run_async, setup_logging

__all__ = ["app", "fail", "load_app", "main", "run_async", "setup_logging"]
