#!/usr/bin/env bash
# The package as a user gets it: build the wheel (not editable), install it into a fresh venv and
# run the console scripts from a folder outside the repo, so only the installed files can be
# imported (the configs are package data, Hydra finds them beside kroncl/run.py).
#
# The fresh venv re-uses the heavy dependencies (torch, transformers, ...) of the repo's
# environment through a .pth file instead of installing them again; kroncl, registry and
# pipelines come from the wheel only (the environment's own kroncl is an editable install, whose
# .pth finder is not read: a path line in a .pth adds a folder without processing its .pth files).
#
# Usage: .ci/wheel.sh [PYTHON]   (default: $KRONCL_PYTHON or .venv/bin/python)
# Run by tests/packaging/test_wheel.py (so `make test` covers it); needs no network.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${1:-${KRONCL_PYTHON:-$repo/.venv/bin/python}}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/kroncl-wheel.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "wheel.sh: FAIL: $*" >&2; exit 1; }
step() { echo "wheel.sh: $*"; }

# 1. Build from a copy of the tree (tracked and untracked-but-not-ignored files), so the build's
#    build/ and *.egg-info never land in the repo and no stray ignored file gets packaged.
mkdir -p "$tmp/src" "$tmp/dist"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard) \
    | (cd "$repo" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _) \
    | (cd "$repo" && tar --null -T - -cf -) | tar -xf - -C "$tmp/src"
else
  tar -C "$repo" --exclude=.venv --exclude=.git --exclude=runs -cf - . | tar -xf - -C "$tmp/src"
fi
step "building the wheel with $py"
"$py" -m pip wheel "$tmp/src" --no-deps --no-build-isolation --quiet -w "$tmp/dist"
wheel="$(ls "$tmp/dist"/kroncl-*.whl)"
step "built $(basename "$wheel")"

# 2. The wheel holds the configs, the Alembic scripts, the scripts' modules and entry points.
"$py" - "$wheel" <<'EOF' || fail "the wheel is missing files"
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["kroncl/configs/config.yaml", "kroncl/configs/stream/toy.yaml", "kroncl/configs/model/tiny.yaml",
        "kroncl/run.py", "kroncl/preflight.py", "registry/cli.py", "registry/migrations/env.py",
        "pipelines/continual.py", "pipelines/compose/cli.py"]
missing = [n for n in need if n not in names]
entry = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
text = zipfile.ZipFile(sys.argv[1]).read(entry).decode() if entry else ""
for script in ("kroncl-run = kroncl.run:cli", "kroncl-registry = registry.cli:main",
               "kroncl-compose = pipelines.compose.cli:main"):
    if script not in text:
        missing.append(f"entry point {script!r}")
if any(n.startswith(("tests/", "configs/")) for n in names):
    missing.append("(no tests/ or top-level configs/ expected)")
print(f"wheel.sh: {len(names)} files in the wheel, "
      f"{sum(n.startswith('kroncl/configs/') and n.endswith('.yaml') for n in names)} config files")
if missing:
    sys.exit("missing from the wheel: " + ", ".join(missing))
EOF

# 3. A fresh venv with only the wheel installed; the dependencies come from $py's site-packages.
"$py" -m venv --without-pip "$tmp/venv"
"$py" -m pip --python "$tmp/venv/bin/python" install --no-deps --no-index --quiet "$wheel"
site="$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
deps="$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
echo "$deps" > "$site/zz-kroncl-deps.pth"   # after the venv's own site-packages on sys.path

# 4. Everything below runs outside the repo: nothing but the installed package is importable.
mkdir -p "$tmp/cwd"
cd "$tmp/cwd"
unset PYTHONPATH
export PATH="$tmp/venv/bin:$PATH" OMP_NUM_THREADS=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$tmp/venv/bin/python" - "$site" "$repo" <<'EOF' || fail "kroncl is not imported from the fresh venv"
import sys
from importlib.metadata import version
from pathlib import Path

import kroncl, pipelines, registry

site, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
for mod in (kroncl, registry, pipelines):
    path = Path(mod.__file__).resolve()
    print(f"wheel.sh: {mod.__name__} from {path}")
    if not path.is_relative_to(site) or path.is_relative_to(repo):
        sys.exit(f"{mod.__name__} imported from {path}, not from {site}")
if kroncl.__version__ != version("kroncl") or kroncl.__version__ == "0+unknown":
    sys.exit(f"kroncl.__version__ {kroncl.__version__!r} != installed {version('kroncl')!r}")
print(f"wheel.sh: kroncl.__version__ {kroncl.__version__}")
EOF
for script in kroncl-run kroncl-registry kroncl-compose; do
  [ "$(command -v "$script")" = "$tmp/venv/bin/$script" ] || fail "$script is not the venv's console script"
done

step "kroncl-run stream=toy model=tiny (registry in a temp dir, tracking off)"
kroncl-run stream=toy model=tiny stream.max_train=48 stream.max_test=24 train.epochs=1 \
  train.progress=false train.threads=1 tracking=off registry=local \
  "paths.runs=$tmp/runs" "hydra.run.dir=$tmp/runs/run" > "$tmp/run.out" 2> "$tmp/run.err" \
  || { rc=$?; tail -n 40 "$tmp/run.err" >&2; fail "kroncl-run exited $rc"; }
[ -s "$tmp/runs/run/summary.json" ] || fail "kroncl-run wrote no summary.json"
grep -q "== kroncl run: stream=toy model=tiny" "$tmp/run.out" || fail "kroncl-run printed no summary"
"$tmp/venv/bin/python" - "$tmp/runs/run/summary.json" <<'EOF' || fail "summary.json is wrong"
import json, sys
import kroncl
data = json.load(open(sys.argv[1]))
assert data["kroncl_version"] == kroncl.__version__, data.get("kroncl_version")
assert data["artifacts"], "no adapters produced"
print(f"wheel.sh: summary.json ok: acc {data['summary']['acc']:.3f}, {len(data['artifacts'])} experiences")
EOF

step "kroncl-registry list (the run's registry) and --help of both CLIs"
kroncl-registry --url "sqlite:///$tmp/runs/registry.db" list > "$tmp/registry.out" \
  || fail "kroncl-registry list exited $?"
grep -q "toy_larger" "$tmp/registry.out" || { cat "$tmp/registry.out" >&2; fail "kroncl-registry lists no toy_larger"; }
kroncl-registry --help > /dev/null || fail "kroncl-registry --help exited $?"
kroncl-compose --help > /dev/null || fail "kroncl-compose --help exited $?"
step "OK"
