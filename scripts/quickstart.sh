#!/usr/bin/env bash
# Quick start: set up this machine, then run the main job: a small ablation study of SSCL's
# components on Fashion-MNIST, on a local Ray instance (24 to 42 minutes on two CPU cores
# shared with other jobs, load average 11 to 23; see the README). It shows a table of its six
# runs and ends with the path of its report and the TensorBoard command; Ray's own lines go to
# runs/quickstart/logs/ray.log (`contrastlab --verbose ablate ...` shows them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/contrastlab ablate ablations/quickstart.yaml --output runs/quickstart "$@"
