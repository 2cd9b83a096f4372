#!/usr/bin/env bash
# Regenerates docs/mlflow-toy-run.png and docs/mlflow-toy-runs.png: two toy runs (kron, lora)
# logged to a fresh store in a temporary folder, a real `mlflow server` over it on loopback,
# headless chromium (docs/shoot_toy_run.js) taking the shots. About 2 minutes on a CPU.
# Needs /usr/bin/chromium (apt-get install -y chromium) and Node >= 18.
# usage (repository root): docs/shoot_toy_run.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
PY=${1:-.venv/bin/python}
REPO=$PWD
WORK=$(mktemp -d)
# A free loopback port (another MLflow UI may already hold a fixed one).
PORT=${PORT:-$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")}
SMALL=(stream=toy model=tiny stream.max_train=48 stream.max_test=24 train.epochs=1 train.progress=false
       train.threads=1 "paths.runs=$WORK/runs")
[ -n "${REUSE_RUNS:-}" ] && WORK=$REUSE_RUNS   # a folder of an earlier call: skip the runs
for adapter in kron lora; do
  [ -n "${REUSE_RUNS:-}" ] && break
  PYTHONPATH=$REPO "$PY" -m kroncl.run "${SMALL[@]}" adapter=$adapter >"$WORK/$adapter.log" 2>&1
done
URI="sqlite:///$WORK/runs/mlflow.db"
read -r EXP RUN < <(PYTHONPATH=$REPO "$PY" -c "
from mlflow import MlflowClient
c = MlflowClient('$URI')
r = c.search_runs([c.get_experiment_by_name('kroncl').experiment_id], \"tags.\`kroncl.adapter\` = 'kron'\")[0]
print(r.info.experiment_id, r.info.run_id)")
# Its own process group (setsid), so the server and its workers stop together on exit.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$(dirname "$PY")/mlflow" server --backend-store-uri "$URI" \
  --host 127.0.0.1 --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill -- -$SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
  kill -0 $SERVER 2>/dev/null || { cat "$WORK/server.log"; exit 1; }; sleep 2
done
[ -d "$WORK/node_modules/playwright-core" ] || (cd "$WORK" && npm init -y >/dev/null && npm install playwright-core >/dev/null)
NODE_PATH=$WORK/node_modules node docs/shoot_toy_run.js "$PORT" "$EXP" "$RUN" "$WORK"
# Fewer colours: the PNGs stay well under 300 KB.
"$PY" -c "
import sys
from PIL import Image
for name in ('mlflow-toy-run.png', 'mlflow-toy-runs.png'):
    Image.open(f'$WORK/{name}').convert('RGB').quantize(colors=128).save(f'docs/{name}', optimize=True)
    print('docs/' + name)"
echo "runs kept in $WORK"
