"""Benchmarks run by hand (``python -m kroncl.bench <name>``), never as timed tests."""
