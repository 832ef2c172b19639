#!/usr/bin/env bash
# Download, into .whl/, the wheels scripts/gpu_check.sh installs on a GPU
# machine that reaches no registry (it has PyTorch, JAX, torchvision, h5py;
# not Keras, KerasTuner or matplotlib). Python 3.12, x86-64 Linux; the same
# Keras and KerasTuner versions as here. Then pass `carry: [".whl"]`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=${PYTHON:-python3}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "keras==$(version keras)" "keras-tuner==$(version keras-tuner)" kt-legacy namex optree \
    absl-py rich markdown-it-py mdurl pygments ml-dtypes packaging requests charset-normalizer idna \
    urllib3 certifi matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six pillow
du -sh .whl
