"""Table a finished sweep: ``python -m pipelines.bench sweep DIR [--out DIR]``.

``DIR`` is a Hydra multirun folder (``python -m kroncl.run -m train.lr=1e-3,3e-3 seed=0,1,2``
writes ``multirun/<date>/<time>/<job number>/``, each a normal run directory) or any folder
tree holding finished runs (``summary.json``). Runs are grouped by their configuration minus
the seed (``config.yaml`` each run wrote; a run without one by its ``overrides.yaml`` or
``.hydra/overrides.yaml``), one table per stream, with the keys that vary between groups
(e.g. ``train.lr``) as columns and ACC / BWT / FWT / forgetting as mean ± std over the seeds.
Settings that change speed, not results (paths, tracking, registry, threads, progress) are not
part of a group's identity.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipelines.bench.results_table import Row, RunInfo, find_runs, stream_report, write_outputs

NOT_RESULTS = ("resume", "run_dir", "paths", "tracking", "registry", "hydra", "seed", "stream.seed",
               "train.progress", "train.threads", "data.cache_dir")
"""As kroncl.config.RunSettings.result_config, plus the seed (what a group pools over)."""


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def overrides_config(run_dir: Path) -> dict[str, Any]:
    """A config from the run's command-line overrides (when it has no config.yaml)."""
    from omegaconf import OmegaConf

    for path in (run_dir / "overrides.yaml", run_dir / ".hydra" / "overrides.yaml"):
        if path.exists():
            out: dict[str, Any] = {}
            for item in OmegaConf.to_container(OmegaConf.load(path)) or []:
                key, _, value = str(item).lstrip("+~").partition("=")
                node = out
                *parents, leaf = key.split(".")
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = value
            return out
    return {}


def identity(run: RunInfo) -> dict[str, str]:
    """The run's configuration minus seed and speed-only settings, as dotted key -> text."""
    config = run.config or overrides_config(run.run_dir)
    if not run.config:
        run.config = config
    flat = flatten(config)
    return {k: str(v) for k, v in flat.items()
            if not any(k == s or k.startswith(s + ".") for s in NOT_RESULTS)}


def seed_of(run: RunInfo) -> Any:
    return run.config.get("seed")


def group_runs(runs: list[RunInfo]) -> tuple[dict[str, list[Row]], list[str]]:
    """Per stream the rows (one per configuration), and the keys that vary between them."""
    groups: dict[tuple, tuple[dict[str, str], list[RunInfo]]] = {}
    for run in runs:
        ident = identity(run)
        groups.setdefault(tuple(sorted(ident.items())), (ident, []))[1].append(run)
    idents = [g[0] for g in groups.values()]
    all_keys = sorted({k for i in idents for k in i})
    varying = [k for k in all_keys if len({i.get(k) for i in idents}) > 1 and k != "stream.name"]
    streams: dict[str, list[Row]] = {}
    for ident, members in groups.values():
        members.sort(key=lambda r: str(seed_of(r)))
        seeds = [seed_of(r) for r in members]
        note = "same seed twice" if len(set(map(str, seeds))) < len(seeds) else ""
        row = Row({k: ident.get(k, "-") for k in varying}, members, note)
        streams.setdefault(ident.get("stream.name", "?"), []).append(row)
    for rows in streams.values():
        rows.sort(key=lambda r: [sort_key(r.keys[k]) for k in varying])
    return streams, varying


def sort_key(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", help="a Hydra multirun folder or any folder tree with finished runs")
    p.add_argument("--out", default=None, help="write sweep.json and sweep.md here (default: DIR)")
    args = p.parse_args(argv)
    root = Path(args.dir)
    if not root.is_dir():
        p.error(f"{root} is not a directory")
    runs = find_runs(root)
    if not runs:
        p.error(f"no finished run (summary.json) under {root}")
    streams, varying = group_runs(runs)
    keys = varying or []
    print(f"{len(runs)} runs under {root}, {sum(len(r) for r in streams.values())} configurations; "
          f"varying: {', '.join(varying) or 'nothing but the seed'}")
    for stream, rows in streams.items():
        print()
        print(stream_report(stream, rows, keys))
    meta = {"command": "python -m pipelines.bench sweep " + " ".join(sys.argv[1:] if argv is None else argv),
            "root": str(root)}
    json_path, md_path = write_outputs(Path(args.out or root), streams, keys, meta, name="sweep")
    print(f"\ntables: {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
