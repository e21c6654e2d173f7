#!/usr/bin/env bash
# Regenerates docs/images/optuna-dashboard.png (the study's overview) and
# optuna-dashboard-trial.png (its first pruned trial): a small SimCLR study on Fashion-MNIST (eight
# trials of four epochs on 1024 images, ASHA stops some after two; about ten minutes on two CPU
# cores), opened in optuna-dashboard on the loopback and photographed by headless Chromium.
#
#   bash scripts/screenshot_dashboard.sh [STUDY_FOLDER]    # default runs/tune/dashboard-example
#
# A folder that already holds a study.db is photographed as it is (no new trials). Needs
# scripts/setup.sh (contrastlab with its test extras, optuna-dashboard among them) and Chromium
# (CHROMIUM=/path/to/chromium where it is not /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
STUDY="${1:-runs/tune/dashboard-example}"
IMAGES="${IMAGES:-docs/images}"

if [ ! -f "$STUDY/study.db" ]; then
  "$BIN/contrastlab" tune search_spaces/simclr.yaml --samples 8 --output "$STUDY" --num-cpus 2 \
    --set data.subset=1024 --set data.test_subset=500 --set optim.epochs=4 --set eval.probe_epochs=5 \
    --set model.width=16
fi

url="sqlite:///$(realpath "$STUDY/study.db")"
port=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/optuna-dashboard" "$url" --host 127.0.0.1 --port "$port" --server wsgiref --quiet >"$STUDY/dashboard.log" 2>&1 &
dashboard=$!
trap 'kill "$dashboard" 2>/dev/null || true; wait "$dashboard" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$port/api/studies" >/dev/null && break
  kill -0 "$dashboard" 2>/dev/null || { echo "optuna-dashboard exited; see $STUDY/dashboard.log" >&2; exit 1; }
  sleep 0.2
done
study_id=$(curl -fs "http://127.0.0.1:$port/api/studies" \
  | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["study_summaries"][0]["study_id"])')
pruned=$(curl -fs "http://127.0.0.1:$port/api/studies/$study_id" | "$BIN/python" -c '
import json, sys
print(min(t["number"] for t in json.load(sys.stdin)["trials"] if t["state"] == "Pruned"))')

mkdir -p "$IMAGES"
shoot() {  # shoot IMAGE PAGE: the dashboard's PAGE as Chromium draws it in a 1400x1230 window
  # --no-sandbox: Chromium refuses to start as root otherwise (containers, CI).
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1230 \
    --virtual-time-budget=15000 --screenshot="$1" "http://127.0.0.1:$port/dashboard/studies/$study_id$2" 2>/dev/null
  echo "$1: $(du -k "$1" | cut -f1) KB"
}
shoot "$IMAGES/optuna-dashboard.png" ""
shoot "$IMAGES/optuna-dashboard-trial.png" "/trials?numbers=$pruned"
echo "study: $url"
