#!/usr/bin/env bash
# Build the TensorRT engines of this edgesmith bundle with trtexec (generated; see README.md).
#
#   ./build_engine.sh                    build every engine whose file is missing
#   ./build_engine.sh NAME...            only these engines
#   ./build_engine.sh --force [NAME...]  rebuild even when the engine file exists
#   ./build_engine.sh --print [NAME...]  print the trtexec command lines, build nothing
#
# An engine only runs with the TensorRT version and GPU architecture that built
# it: run this on the device that will run the engine. The precision is in the
# ONNX (fp16 tensors or QDQ int8 nodes), built as a strongly typed network:
# TensorRT 10 gets --stronglyTyped (or --fp16 for an ONNX without precision),
# TensorRT 11 removed --fp16/--int8 and always builds strongly typed.
#
# Environment: TRTEXEC=/path/to/trtexec skips the search for trtexec,
# TRT_MAJOR=10|11 skips the TensorRT version detection.
set -euo pipefail

BUNDLE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET='jetson'
WORKSPACE_MIB='2048'
TIMING_CACHE='engines/timing.cache'
MIN_SHAPES='input_ids:1x8,attention_mask:1x8'
OPT_SHAPES='input_ids:4x128,attention_mask:4x128'
MAX_SHAPES='input_ids:16x256,attention_mask:16x256'
ENGINE_NAMES=('engine_int8' 'engine_fp16')
ENGINE_ONNX=('models/engine_int8.onnx' 'models/fp32.onnx')
ENGINE_FILES=('engines/engine_int8.engine' 'engines/engine_fp16.engine')
# Engines the build host made and shipped ('' where none); never overwritten, see build_one.
ENGINE_SHIPPED=('' '')
ENGINE_PRECISIONS=('int8' 'fp16')
# 1: the ONNX carries its precision (fp16 tensors / QDQ nodes) and is built strongly typed.
ENGINE_TYPED=(1 0)

die() {
    printf 'build_engine.sh: %s\n' "$*" >&2
    exit 2
}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    printf 'engines in this bundle (%s): %s\n' "$TARGET" "${ENGINE_NAMES[*]}"
}

find_trtexec() {
    if [[ -n "${TRTEXEC:-}" ]]; then
        [[ -x "$TRTEXEC" ]] || die "TRTEXEC=$TRTEXEC is not an executable file"
        TRTEXEC_BIN="$TRTEXEC"
        return
    fi
    if TRTEXEC_BIN="$(command -v trtexec)"; then
        return
    fi
    local candidate
    # JetPack installs trtexec here without putting it on PATH.
    for candidate in /usr/src/tensorrt/bin/trtexec /usr/local/tensorrt/bin/trtexec /opt/tensorrt/bin/trtexec; do
        if [[ -x "$candidate" ]]; then
            TRTEXEC_BIN="$candidate"
            return
        fi
    done
    die "trtexec not found on PATH or in /usr/src/tensorrt/bin; on Jetson install JetPack (sudo apt install nvidia-jetpack), on x86-64 install TensorRT and add its bin/ to PATH, or set TRTEXEC=/path/to/trtexec"
}

# The TensorRT major version: trtexec's banner line says "[TensorRT v100300]"
# (10.3.0; 8.x printed v8601), else the Debian package, else the Python module.
detect_major() {
    local banner code version pkg
    local banner_re='\[TensorRT v([0-9]+)\]' version_re='^([0-9]+)\.'
    if [[ -n "${TRT_MAJOR:-}" ]]; then
        [[ "$TRT_MAJOR" =~ ^[0-9]+$ ]] || die "TRT_MAJOR=$TRT_MAJOR is not a number"
        MAJOR="$TRT_MAJOR"
        return
    fi
    banner="$("$TRTEXEC_BIN" --help 2>&1 | head -n 3 || true)"
    if [[ "$banner" =~ $banner_re ]]; then
        code="${BASH_REMATCH[1]}"
        if (( code >= 100000 )); then MAJOR=$(( code / 10000 )); else MAJOR=$(( code / 1000 )); fi
        return
    fi
    if command -v dpkg-query >/dev/null 2>&1; then
        for pkg in libnvinfer-bin tensorrt libnvinfer11 libnvinfer10; do
            version="$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)"
            if [[ "$version" =~ $version_re ]]; then
                MAJOR="${BASH_REMATCH[1]}"
                return
            fi
        done
    fi
    version="$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
    if [[ "$version" =~ $version_re ]]; then
        MAJOR="${BASH_REMATCH[1]}"
        return
    fi
    die "cannot tell which TensorRT $TRTEXEC_BIN belongs to (no [TensorRT vNNNNNN] banner, no libnvinfer package, no tensorrt Python module); set TRT_MAJOR=10 or TRT_MAJOR=11"
}

# Precision flags for engine $1 (index) under TensorRT $MAJOR, into PRECISION_FLAGS.
precision_flags() {
    local name="${ENGINE_NAMES[$1]}" precision="${ENGINE_PRECISIONS[$1]}" typed="${ENGINE_TYPED[$1]}"
    PRECISION_FLAGS=()
    if (( MAJOR < 10 )); then
        die "TensorRT $MAJOR is too old for this bundle; install TensorRT 10 or newer (JetPack 6+)"
    fi
    if (( MAJOR >= 11 )); then
        # TensorRT 11 removed --fp16/--int8/--best; every network is strongly typed.
        if [[ "$typed" != 1 ]]; then
            die "engine $name: TensorRT $MAJOR builds only strongly typed networks and its ONNX carries no $precision precision; rebuild the bundle with an fp16 or QDQ int8 ONNX (quantize.method 'fp16' or 'static')"
        fi
        return
    fi
    if [[ "$typed" == 1 ]]; then
        PRECISION_FLAGS=(--stronglyTyped)
    elif [[ "$precision" == int8 ]]; then
        PRECISION_FLAGS=(--int8 --fp16)
    else
        PRECISION_FLAGS=(--fp16)
    fi
}

CURRENT_TMP=""
cleanup() {
    if [[ -n "$CURRENT_TMP" ]]; then rm -f "$CURRENT_TMP"; fi
}
trap cleanup EXIT

build_one() {
    local i="$1"
    local name="${ENGINE_NAMES[$i]}"
    local onnx="$BUNDLE_DIR/${ENGINE_ONNX[$i]}"
    local out="$BUNDLE_DIR/${ENGINE_FILES[$i]}"
    local shipped="${ENGINE_SHIPPED[$i]}"
    if [[ -f "$out" && "$FORCE" != 1 && "$PRINT" != 1 ]]; then
        printf 'build_engine.sh: %s: %s exists (--force rebuilds it)\n' "$name" "${ENGINE_FILES[$i]}" >&2
        return
    fi
    # The shipped engine stays as it is (the manifest verifies it); a device build goes to $out.
    if [[ -n "$shipped" && -f "$BUNDLE_DIR/$shipped" && "$FORCE" != 1 && "$PRINT" != 1 ]]; then
        printf 'build_engine.sh: %s: the bundle ships %s, built on the build host (--force builds one for this device)\n' "$name" "$shipped" >&2
        return
    fi
    [[ -f "$onnx" ]] || die "engine $name: ${ENGINE_ONNX[$i]} is missing from the bundle; copy the whole bundle again"
    precision_flags "$i"
    local tmp="$out.tmp.$$"
    local cmd=("$TRTEXEC_BIN" "--onnx=$onnx" "--saveEngine=$tmp"
        "--minShapes=$MIN_SHAPES" "--optShapes=$OPT_SHAPES" "--maxShapes=$MAX_SHAPES"
        "--memPoolSize=workspace:${WORKSPACE_MIB}M")
    if (( ${#PRECISION_FLAGS[@]} )); then cmd+=("${PRECISION_FLAGS[@]}"); fi
    if [[ -n "$TIMING_CACHE" ]]; then cmd+=("--timingCacheFile=$BUNDLE_DIR/$TIMING_CACHE"); fi
    cmd+=(--skipInference)
    if [[ "$PRINT" == 1 ]]; then
        printf '%q ' "${cmd[@]}"
        printf '\n'
        return
    fi
    mkdir -p "$(dirname "$out")"
    if [[ -n "$TIMING_CACHE" ]]; then mkdir -p "$(dirname "$BUNDLE_DIR/$TIMING_CACHE")"; fi
    printf 'build_engine.sh: building %s (%s, TensorRT %s) with %s\n' "$name" "${ENGINE_PRECISIONS[$i]}" "$MAJOR" "$TRTEXEC_BIN" >&2
    CURRENT_TMP="$tmp"
    local status=0
    "${cmd[@]}" >&2 || status=$?
    if (( status != 0 )) || [[ ! -s "$tmp" ]]; then
        die "engine $name: trtexec failed (exit status $status); its output is above"
    fi
    mv -f "$tmp" "$out"
    CURRENT_TMP=""
    printf 'build_engine.sh: wrote %s\n' "${ENGINE_FILES[$i]}" >&2
}

FORCE=0
PRINT=0
SELECTED=()
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --print) PRINT=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $arg; see --help" ;;
        *) SELECTED+=("$arg") ;;
    esac
done

INDICES=()
if (( ${#SELECTED[@]} == 0 )); then
    for i in "${!ENGINE_NAMES[@]}"; do INDICES+=("$i"); done
else
    for wanted in "${SELECTED[@]}"; do
        found=""
        for i in "${!ENGINE_NAMES[@]}"; do
            if [[ "${ENGINE_NAMES[$i]}" == "$wanted" ]]; then found="$i"; fi
        done
        [[ -n "$found" ]] || die "no engine named $wanted in this bundle; engines: ${ENGINE_NAMES[*]}"
        INDICES+=("$found")
    done
fi

find_trtexec
detect_major
for i in "${INDICES[@]}"; do
    build_one "$i"
done
