#!/usr/bin/env bash
# Install the project into a fresh virtual environment and run the test suite:
# everything (doctests included) under TensorFlow, then the portable tests
# under JAX and PyTorch: not those marked tf_only (TensorFlow features) or
# one_backend (backend-independent checks: structure, parameter counts,
# argument handling, examples), and no doctests (documentation examples run
# once), after ruff's lint and format check and the documentation build. Each pass prints its 15 slowest tests. This is the README's test
# command; .ci/run calls it. PYTEST_WORKERS (default 2, the CI machine's
# cores) sets pytest-xdist's worker count; 0 runs in one process.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv-test
WORKERS=${PYTEST_WORKERS:-2}
start=$(date +%s)
"$PY" -m venv --clear "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# The CPU wheel of torch 2.13.0 first (the tested version; a newer one in the
# extra's range would be a multi-GB CUDA build), then the project.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,jax,torch,docs]"
echo "install: $(( $(date +%s) - start )) s"

# Lint and formatting first (seconds): configured in pyproject.toml.
t0=$(date +%s)
ruff check . && ruff format --check .
echo "=== ruff: $(( $(date +%s) - t0 )) s ==="
# The documentation site builds without a warning (API reference from the
# docstrings, pages from the README and the registry); into a scratch folder.
t0=$(date +%s)
KERAS_BACKEND=jax mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "=== docs: $(( $(date +%s) - t0 )) s ==="

export TF_CPP_MIN_LOG_LEVEL=3 PYTHONHASHSEED=0
# JAX compiles every eager op and every initializer's random draw per shape
# (63 compilations, 13 s, to build GoogLeNet): a compilation cache shared by
# the workers and the tests' child processes, new for each run (side by side
# on one machine: the JAX pass 280 s instead of 287 s, four of its heaviest
# files 142 s instead of 162 s).
JAX_COMPILATION_CACHE_DIR=$(mktemp -d)
export JAX_COMPILATION_CACHE_DIR JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
parallel=()
# worksteal: a worker that runs dry takes tests from the other one's queue
# (the TensorFlow pass took 565 s instead of loadfile's 591 s, side by side on
# one machine); module-scoped fixtures may then be built in both workers.
[ "$WORKERS" = 0 ] || parallel=(-n "$WORKERS" --dist worksteal)
status=0
for backend in tensorflow jax torch; do
    if [ "$backend" = tensorflow ]; then
        selection=(--doctest-modules tests zoo surgery tuning)
    else
        selection=(-m "not tf_only and not one_backend" tests)
    fi
    echo "=== KERAS_BACKEND=$backend ==="
    t0=$(date +%s)
    KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider --durations=15 \
        "${parallel[@]}" "${selection[@]}" || status=$?
    echo "=== $backend: $(( $(date +%s) - t0 )) s (exit $status) ==="
    [ "$status" = 0 ] || break
done
echo "total: $(( $(date +%s) - start )) s"
exit "$status"
