"""The asyncjobs benchmark suite: ``python -m benchmarks --help``."""
