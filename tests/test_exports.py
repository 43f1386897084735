"""The public surface: __all__ is complete and every name claims asyncjobs as home."""

from __future__ import annotations

import asyncjobs


def test_all_names_exist_once() -> None:
    assert len(set(asyncjobs.__all__)) == len(asyncjobs.__all__)
    for name in asyncjobs.__all__:
        assert hasattr(asyncjobs, name), name


def test_public_classes_have_public_module() -> None:
    for name in asyncjobs.__all__:
        obj = getattr(asyncjobs, name)
        if isinstance(obj, type):
            assert obj.__module__ == "asyncjobs", name


def test_no_private_leaks() -> None:
    # "@py_builtins" and kin: pytest rewrites the asserts of a package that ships a
    # pytest11 plugin, as ours does (asyncjobs.pytest_plugin, loaded in this run too).
    public = {n for n in dir(asyncjobs) if not n.startswith(("_", "@"))}
    submodules = {
        "api",
        "cli",
        "iteration",
        "outbox",
        "testing",
        "pytest_plugin",
        "web",
        "prometheus",
        "otel",
    }
    assert public - set(asyncjobs.__all__) <= submodules
