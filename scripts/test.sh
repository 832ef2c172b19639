#!/usr/bin/env bash
# Install the project into a fresh virtual environment and run the test suite:
# everything under TensorFlow, then the portable tests (not marked tf_only)
# under JAX and PyTorch. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv-test
start=$(date +%s)
"$PY" -m venv --clear "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[test,jax,torch]"
echo "install: $(( $(date +%s) - start )) s"

export TF_CPP_MIN_LOG_LEVEL=3 PYTHONHASHSEED=0
status=0
for backend in tensorflow jax torch; do
    marker=()
    [ "$backend" = tensorflow ] || marker=(-m "not tf_only")
    echo "=== KERAS_BACKEND=$backend ==="
    t0=$(date +%s)
    KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider --doctest-modules "${marker[@]}" tests zoo surgery tuning || status=$?
    echo "=== $backend: $(( $(date +%s) - t0 )) s (exit $status) ==="
    [ "$status" = 0 ] || break
done
echo "total: $(( $(date +%s) - start )) s"
exit "$status"
