#!/usr/bin/env bash
# Installs every runtime dependency at its floor from pyproject.toml (NAME>=FLOOR becomes
# NAME==FLOOR) into a separate virtual environment and runs the tests that start no Ray
# cluster there. torch and torchvision are taken from .venv instead (their CUDA builds are
# gigabytes; their floors are checked by review, see CONTRIBUTING.md), so run setup.sh first.
#
#   bash scripts/check_floors.sh            # venv in .venv-floors (about ten minutes on two cores)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FLOORS_VENV:-.venv-floors}"
[ -x .venv/bin/python ] || { echo "run scripts/setup.sh first (torch comes from .venv)"; exit 2; }
pins=$(.venv/bin/python - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    name, floor = re.fullmatch(r"([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)>=([0-9.]+)", dep).groups()
    if not name.startswith(("torch", "torchvision")):
        print(f"{name}=={floor}")
PY
)
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
echo "installing the floors: $(echo $pins | tr '\n' ' ')"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q $pins pytest psycopg2-binary
site=$("$VENV/bin/python" -c "import site; print(site.getsitepackages()[0])")
main_site=$(.venv/bin/python -c "import site; print(site.getsitepackages()[0])")
# Appended after the floors' own site-packages: torch and torchvision resolve to .venv's,
# every floor-pinned package to this environment's.
echo "$main_site" > "$site/zz_torch_from_main_venv.pth"
"$VENV/bin/python" -c "import importlib.metadata as m; print(' '.join(f'{p} {m.version(p)}' for p in ('ray','optuna','numpy','scipy','pydantic','torch')))"
PYTHONPATH="$PWD/platform" OMP_NUM_THREADS=1 "$VENV/bin/python" -m pytest -q -m "not ray" -p no:cacheprovider
