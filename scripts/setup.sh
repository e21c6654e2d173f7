#!/usr/bin/env bash
# Sets up a fresh machine: the Fashion-MNIST Debian package, PostgreSQL for the study
# database tests, and a virtual environment with contrastlab and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v pg_ctlcluster >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq && as_root apt-get install -y -qq "${need[@]}" >/dev/null \
    || echo "warning: could not install ${need[*]} (tests that need them will skip or fail with a reason)"
fi
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "environment ready: $(.venv/bin/python -c 'import contrastlab, torch, ray; print("contrastlab", contrastlab.__version__, "torch", torch.__version__, "ray", ray.__version__)')"
