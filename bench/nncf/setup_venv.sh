#!/usr/bin/env bash
# Create (or refresh) bench/nncf/.venv with NNCF 3.4, OpenVINO, ONNX Runtime and the same torch /
# transformers as the project, kept apart from the project's .venv (the peer must not share it).
#
#   bash bench/nncf/setup_venv.sh           # no-op when already installed from this requirements.txt
#   bash bench/nncf/setup_venv.sh --force   # recreate from scratch
#
# Env: PYTHON (default python3.11), NNCF_VENV (default bench/nncf/.venv).
# Also compiles NNCF's C++ CPU extension for quantization-aware training once (it needs g++),
# so the QAT run does not compile it under NNCF's 60 s load timeout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${NNCF_VENV:-$here/.venv}"
python="${PYTHON:-python3.11}"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$venv"
elif [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "setup_venv: ${venv#$repo/} is up to date"
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
NNCF_EXTENSION_LOAD_TIMEOUT=0 "$venv/bin/python" - <<'PY'
import nncf, onnxruntime, openvino, torch, transformers
import nncf.torch
from nncf.torch.quantization.extensions import QuantizedFunctionsCPU
nncf.torch.force_build_cpu_extensions()
QuantizedFunctionsCPU.get("Quantize_forward")
kind = type(QuantizedFunctionsCPU._loaded_namespace).__name__
print("setup_venv: nncf", nncf.__version__, "openvino", openvino.get_version(), "onnxruntime", onnxruntime.__version__,
      "torch", torch.__version__, "transformers", transformers.__version__, "| NNCF CPU extension:", kind)
PY
echo "$want" > "$stamp"
echo "setup_venv: ${venv#$repo/} ready in $((SECONDS - start))s"
