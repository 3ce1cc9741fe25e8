"""Benchmarks of stateless-chat: run them all with ``python bench/run.py`` (see docs/benchmarks.md)."""
