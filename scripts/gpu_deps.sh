#!/usr/bin/env bash
# The Python packages benchmarks.gpu_check needs that the GPU machine lacks (it has torch, pyarrow, pillow,
# opencv, pyyaml, numpy, tqdm, psutil, but not pydantic), unpacked into .gpu_deps/ for `carry`:
#   bash scripts/gpu_deps.sh   # here, once (needs the package index; 7.6 MB unpacked)
#   device run: PYTHONPATH=.gpu_deps python3 -m benchmarks.gpu_check --out $OUT/gpu_check.json
# The GPU machine runs Python 3.12 on x86-64, hence the wheels' tags; versions as pyproject.toml pins.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
rm -rf .gpu_deps .gpu_deps.wheels
"$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
    --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .gpu_deps.wheels \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
mkdir .gpu_deps
for wheel in .gpu_deps.wheels/*.whl; do
    "$python" -m zipfile -e "$wheel" .gpu_deps
done
rm -rf .gpu_deps.wheels
du -sh .gpu_deps
