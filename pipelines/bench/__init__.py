"""Benchmarks run by hand (``python -m pipelines.bench <name>``), never as timed tests."""
