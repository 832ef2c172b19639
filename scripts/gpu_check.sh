#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py) on a machine that reaches no package
# registry: install the wheels carried in .whl/ (made beforehand by
# scripts/gpu_wheels.sh on a machine that does), only those whose package
# is not importable already, into /tmp/site; then run the check on JAX.
# Results: $OUT/gpu_check.{json,md,log}. GPU_CHECK_TINY=1 runs tiny settings
# (a CPU will do). Extra arguments go to gpu_check.py (e.g. --budget 450).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/site}
if [ -d .whl ]; then
    missing=()
    for wheel in .whl/*.whl; do
        # The wheel's import name: what its top_level.txt says, else its
        # distribution name with dashes as underscores.
        dist=$(basename "$wheel" | cut -d- -f1)
        module=$(unzip -p "$wheel" '*.dist-info/top_level.txt' 2>/dev/null | head -1 || true)
        case $dist in
            absl_py) module=absl ;; markdown_it_py) module=markdown_it ;; python_dateutil) module=dateutil ;;
        esac
        module=${module:-$(echo "$dist" | tr '[:upper:]-' '[:lower:]_')}
        "$PY" -c "import $module" 2>/dev/null || missing+=("$wheel")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${#missing[@]} carried wheel(s): ${missing[*]##*/}"
        "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "${missing[@]}"
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3
exec "$PY" scripts/gpu_check.py "$@"
