#!/usr/bin/env bash
# Screenshots of a real TensorBoard server for docs/monitoring.md: the custom-scalars overlay
# and the HParams table of an ablation (by default the quick start's, `runs/quickstart`).
# TensorBoard listens on loopback only; a headless Chromium takes each picture.
#
#   bash scripts/screenshot_tensorboard.sh [LOGDIR] [OUT_DIR]
#   (defaults: runs/quickstart/runs and docs/images; BROWSER=/usr/bin/chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
LOGDIR="${1:-runs/quickstart/runs}"
OUT="${2:-docs/images}"
BROWSER="${BROWSER:-$(command -v chromium || command -v chromium-browser || command -v google-chrome)}"
TB="${TENSORBOARD:-$( [ -x .venv/bin/tensorboard ] && echo .venv/bin/tensorboard || command -v tensorboard || true)}"
[ -d "$LOGDIR" ] || { echo "no TensorBoard folder at $LOGDIR (run scripts/quickstart.sh first)"; exit 2; }
[ -x "$BROWSER" ] || { echo "no Chromium found (set BROWSER)"; exit 2; }
[ -n "$TB" ] && [ -x "$TB" ] || { echo "no tensorboard found (run scripts/setup.sh, or set TENSORBOARD)"; exit 2; }
mkdir -p "$OUT"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$TB" --logdir "$LOGDIR" --host 127.0.0.1 --port "$PORT" --reload_interval 0 >"$OUT/.tensorboard.log" 2>&1 &
TB_PID=$!
trap 'kill "$TB_PID" 2>/dev/null || true; rm -f "$OUT/.tensorboard.log"' EXIT
for _ in $(seq 120); do
    # Up, and the runs loaded (the list is no longer empty).
    curl -fs "http://127.0.0.1:$PORT/data/runs" 2>/dev/null | grep -q '"' && break
    sleep 1
done
curl -fs "http://127.0.0.1:$PORT/data/runs" | grep -q '"' || { cat "$OUT/.tensorboard.log"; echo "TensorBoard did not start"; exit 1; }
shoot() {  # shoot NAME FRAGMENT WIDTHxHEIGHT
    rm -f "$OUT/$1"
    "$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$3" \
        --virtual-time-budget=20000 --screenshot="$OUT/$1" "http://127.0.0.1:$PORT/#$2" >/dev/null 2>&1
    [ -s "$OUT/$1" ] || { echo "no screenshot taken: $OUT/$1"; exit 1; }
    echo "$OUT/$1"
}
shoot tensorboard_custom_scalars.png custom_scalars 1600,1000
shoot tensorboard_hparams.png hparams 1920,900
