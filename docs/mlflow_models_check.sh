#!/usr/bin/env bash
# The registry in MLflow's UI, end to end, checked in headless Chromium (about 3 minutes):
# a toy run (model=tiny, quant=int8) registers four adapter versions and mirrors them into its
# MLflow store; kroncl's alias `production` is set and mirrored with `registry sync-mlflow`;
# then `mlflow ui` is opened in Chromium and docs/mlflow_models_check.js checks that the Models
# page lists both adapters with @production, an adapter's page its versions with kroncl's tags,
# and the run page its logged models linked to those versions. Screenshots: $OUT (default docs/).
# Needs Debian's chromium (/usr/bin/chromium) and Node >= 18; playwright-core is installed once
# into $KRONCL_PLAYWRIGHT_DIR (default /tmp/kroncl-playwright). Run from the repository root.
set -euo pipefail
PY="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-docs}"
WORK="$(mktemp -d)"
PORT="${PORT:-57821}"
PW="${KRONCL_PLAYWRIGHT_DIR:-/tmp/kroncl-playwright}"
if [ ! -d "$PW/node_modules/playwright-core" ]; then
  mkdir -p "$PW" && (cd "$PW" && npm init -y >/dev/null && npm install --silent playwright-core)
fi

RUNS="$WORK/runs"
"$PY" -m kroncl.run stream=toy model=tiny stream.max_train=48 stream.max_test=24 train.epochs=1 \
  quant=int8 train.progress=false "paths.runs=$RUNS"
REG=(--url "sqlite:///$RUNS/registry.db" --artifacts "$RUNS/registry_artifacts")
"$PY" -m registry "${REG[@]}" alias set tiny-toy_larger-kron production 1
"$PY" -m registry "${REG[@]}" sync-mlflow --tracking-uri "sqlite:///$RUNS/mlflow.db"
read -r EXP RUN < <("$PY" -c "from mlflow import MlflowClient
r = MlflowClient('sqlite:///$RUNS/mlflow.db').search_runs(['1'])[0]; print(r.info.experiment_id, r.info.run_id)")

MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$(dirname "$PY")/mlflow" ui \
  --backend-store-uri "sqlite:///$RUNS/mlflow.db" --host 127.0.0.1 --port "$PORT" >"$WORK/ui.log" 2>&1 &
UI=$!
trap 'pkill -P "$UI" 2>/dev/null; kill "$UI" 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 3; done
NODE_PATH="$PW/node_modules" node docs/mlflow_models_check.js "$PORT" "$EXP" "$RUN" "$OUT" \
  tiny-toy_larger-kron tiny-toy_smaller-kron
