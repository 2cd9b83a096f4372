"""Hydra's YAML configs of ``kroncl.run`` (package data; no code).

A package, not a plain folder: run as a console script (``kroncl-run``), Hydra looks the configs up
as the module ``kroncl.configs`` (``pkg://``), which must be importable.
"""
