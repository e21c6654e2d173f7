#!/usr/bin/env bash
# Quick start: set up this machine, then run the main job: a small ablation study of SSCL's
# components on Fashion-MNIST, on a local Ray instance (about 10 minutes on two CPU cores).
# It ends with the path of its report and the TensorBoard command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/contrastlab ablate ablations/quickstart.yaml --output runs/quickstart "$@"
