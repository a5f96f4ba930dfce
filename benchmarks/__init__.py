"""Benchmarks: `python -m benchmarks.run` rewrites the tables in BENCHMARKS.md."""
