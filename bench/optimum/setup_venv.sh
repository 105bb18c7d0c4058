#!/usr/bin/env bash
# Create (or refresh) bench/.venv-optimum with Hugging Face Optimum, kept apart from the
# project's .venv because optimum-onnx pins transformers<4.58.
#
#   bash bench/optimum/setup_venv.sh           # no-op when already installed from this requirements.txt
#   bash bench/optimum/setup_venv.sh --force   # recreate from scratch
#
# Env: PYTHON (default python3.11), OPTIMUM_VENV (default bench/.venv-optimum).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${OPTIMUM_VENV:-$repo/bench/.venv-optimum}"
python="${PYTHON:-python3.11}"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$venv"
elif [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "setup_venv: $venv is up to date"
    exit 0
fi

ver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$ver" != "3.11" ]]; then
    echo "setup_venv: need Python 3.11 (got $ver from $python); set PYTHON=" >&2
    exit 1
fi

start=$SECONDS
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check -r "$req"
"$venv/bin/python" -m pip check
"$venv/bin/python" - <<'PY'
import onnxruntime, optimum.exporters.onnx, optimum.onnxruntime, torch, transformers
from importlib.metadata import version
print("setup_venv: optimum", version("optimum"), "optimum-onnx", version("optimum-onnx"),
      "transformers", transformers.__version__, "torch", torch.__version__, "onnxruntime", onnxruntime.__version__)
PY
echo "$want" > "$stamp"
echo "setup_venv: $venv ready in $((SECONDS - start))s"
