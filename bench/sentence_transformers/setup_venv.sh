#!/usr/bin/env bash
# Create (or refresh) the two venvs of the sentence-transformers "peer", kept apart from the
# project's .venv:
#   st       bench/.venv-st       sentence-transformers 6.2: torch + OpenVINO backends (requirements.txt)
#   st-onnx  bench/.venv-st-onnx  sentence-transformers 5.7: ONNX backend (requirements-onnx.txt);
#            ST 6.2's ONNX backend cannot be installed (see requirements.txt).
#
#   bash bench/sentence_transformers/setup_venv.sh                 # both; each a no-op when already installed from its requirements file
#   bash bench/sentence_transformers/setup_venv.sh st-onnx         # just one (st | st-onnx | all)
#   bash bench/sentence_transformers/setup_venv.sh --force [WHICH] # recreate from scratch (both unless WHICH)
#
# Each venv keeps the sha256 of its requirements file in <venv>/.requirements.sha256.
# Env: PYTHON (default python3.11), ST_VENV (default bench/.venv-st), ST_ONNX_VENV (default bench/.venv-st-onnx).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3.11}"
force=0
which=all
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        st|st-onnx|all) which="$arg" ;;
        *) echo "setup_venv: unknown argument $arg (want [--force] [st|st-onnx|all])" >&2; exit 2 ;;
    esac
done

# `from transformers import PreTrainedModel` is what breaks if a CUDA torchvision sneaks in.
check_st='
import onnxruntime, openvino, torch, transformers
from transformers import PreTrainedModel  # noqa: F401
import optimum.intel.openvino  # noqa: F401
import sentence_transformers
from sentence_transformers import export_static_quantized_openvino_model  # noqa: F401
from importlib.metadata import version
print("setup_venv: sentence-transformers", sentence_transformers.__version__, "transformers", transformers.__version__,
      "optimum-intel", version("optimum-intel"), "openvino", openvino.__version__, "torch", torch.__version__,
      "onnxruntime", onnxruntime.__version__)
'
check_st_onnx='
import onnxruntime, torch, transformers
from transformers import PreTrainedModel  # noqa: F401
import optimum.onnxruntime  # noqa: F401
import sentence_transformers
from sentence_transformers import export_dynamic_quantized_onnx_model, export_optimized_onnx_model  # noqa: F401
from importlib.metadata import version
print("setup_venv: sentence-transformers", sentence_transformers.__version__, "transformers", transformers.__version__,
      "optimum", version("optimum"), "optimum-onnx", version("optimum-onnx"), "torch", torch.__version__,
      "onnxruntime", onnxruntime.__version__)
'

setup_one() {  # venv requirements-file check-script
    local venv="$1" req="$2" check="$3"
    local stamp="$venv/.requirements.sha256" want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ "$force" == 1 ]]; then
        rm -rf "$venv"
    elif [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "setup_venv: $venv is up to date"
        return 0
    fi
    local ver start=$SECONDS
    ver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [[ "$ver" != "3.11" ]]; then
        echo "setup_venv: need Python 3.11 (got $ver from $python); set PYTHON=" >&2
        exit 1
    fi
    [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check -r "$req"
    "$venv/bin/python" -m pip check
    HF_HUB_OFFLINE=1 "$venv/bin/python" -c "$check"
    echo "$want" > "$stamp"
    echo "setup_venv: $venv ready in $((SECONDS - start))s"
}

if [[ "$which" == all || "$which" == st ]]; then
    setup_one "${ST_VENV:-$repo/bench/.venv-st}" "$here/requirements.txt" "$check_st"
fi
if [[ "$which" == all || "$which" == st-onnx ]]; then
    setup_one "${ST_ONNX_VENV:-$repo/bench/.venv-st-onnx}" "$here/requirements-onnx.txt" "$check_st_onnx"
fi
