#!/usr/bin/env bash
# The project's test command (README): fresh virtual environments from the project's own files, then pytest.
#   .venvs/dev          train + edge + dev extras (TensorFlow): the test suite runs here
#   .venvs/edge         only the `edge` extra (ai-edge-litert): the CLI must work without TensorFlow
#   .venvs/edge-tflite  only the `edge-tflite` extra (tflite-runtime 2.14, numpy<2)
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
V=.venvs
fresh() { rm -rf "$V/$1"; "$PY" -m venv "$V/$1"; "$V/$1/bin/pip" install -q --upgrade pip; }

fresh dev
"$V/dev/bin/pip" install -q -e '.[train,edge,dev]'
fresh edge
"$V/edge/bin/pip" install -q '.[edge]'
export EMNIST_EDGE_VENV_LITERT="$PWD/$V/edge"
if "$PY" -c 'import sys; sys.exit(sys.version_info >= (3, 12))'; then  # tflite-runtime stops at Python 3.11
  fresh edge-tflite
  "$V/edge-tflite/bin/pip" install -q '.[edge-tflite]'
  export EMNIST_EDGE_VENV_TFLITE="$PWD/$V/edge-tflite"
fi
rm -rf build/lib build/bdist.*  # setuptools' leftovers from the non-editable installs
exec "$V/dev/bin/python" -m pytest "$@"
