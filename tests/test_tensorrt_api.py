"""Every TensorRT and pycuda name our code uses exists in the real packages.

TensorRT and pycuda cannot be installed here, so the names come from the real
artifacts on PyPI, extracted once into tests/fixtures/api/ by
tools/extract_api_names.py (TensorRT: the pybind11 module from the
tensorrt-cuXX-bindings wheels, imported against stub libraries and listed
class by class with signatures; pycuda: its boost.python sources). Each
fixture's header names the package, version and the artifact's sha256.

tools/api_check.py follows types through the code: `builder.create_network()`
is an INetworkDefinition because the real signature says so, so a method
called on it is looked up on that class, with its real parameter names. The
tests below prove the checker is not a rubber stamp: every checked name in our
code, misspelled, is caught, as are names on the wrong class, wrong keywords,
names missing from one pinned version, and API objects it cannot follow.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.package.stubs import render
from test_tensorrt_stub import CONTEXT
from tools.api_check import FIXTURES, Api, check_source, load_apis
from tools.extract_api_names import PINS

REPO = Path(__file__).resolve().parents[1]
ENGINE_RECIPE = REPO / "recipes" / "formats" / "tensorrt_engine.py"
# Every TensorRT/pycuda call a bundle makes is in this runtime module; run_engine.py only wires it up.
ENGINE_RUNNER = REPO / "runtime" / "tensorrt_runner.py"


@pytest.fixture(scope="module")
def apis():
    return load_apis()


@pytest.fixture(scope="module")
def sources():
    return {
        "recipes/formats/tensorrt_engine.py": ENGINE_RECIPE.read_text(encoding="utf-8"),
        "runtime/tensorrt_runner.py": ENGINE_RUNNER.read_text(encoding="utf-8"),
    }


# -- the fixtures ----------------------------------------------------------------

def test_every_pin_has_a_fixture_with_provenance():
    names = sorted(p.name for p in FIXTURES.glob("*.txt"))
    assert names == sorted(pin.fixture.name for pin in PINS)
    for pin in PINS:
        api = Api(pin.fixture)
        assert api.header["package"] == f"{pin.package}=={pin.version}"
        assert api.header["module"] == pin.module
        assert re.fullmatch(r"[0-9a-f]{64}", api.header["sha256"])
        assert api.header["artifact"].startswith(pin.package.replace("-", "_") + "-" + pin.version)


def test_fixtures_hold_known_facts(apis):
    """Spot checks from the TensorRT/pycuda documentation, guarding the extractor itself."""
    trt = {a.header["package"].split("==")[1]: a for a in apis["tensorrt"]}
    for version, api in trt.items():
        major = int(version.split(".")[0])
        assert api.get("tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED")
        # Explicit batch was deprecated in 10 and removed in 11; weak-typing flags were removed in 11.
        assert bool(api.get("tensorrt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH")) == (major == 10)
        assert bool(api.get("tensorrt.BuilderFlag.FP16")) == (major == 10)
        assert bool(api.get("tensorrt.BuilderFlag.INT8")) == (major == 10)
        (timing,) = api.get("tensorrt.IBuilderConfig.set_timing_cache")
        assert timing.params == ("cache", "ignore_mismatch") and timing.returns == "bool"
        (create,) = api.get("tensorrt.Builder.create_network")
        assert create.returns == "tensorrt.INetworkDefinition"
        assert api.get("tensorrt.IExecutionContext.execute_async_v3")
        assert not api.get("tensorrt.IExecutionContext.execute_async_v2")  # removed in 10
        assert api.get("tensorrt.ICudaEngine.num_io_tensors")[0].kind == "property"
        assert api.canonical("tensorrt.Logger.Severity") == "tensorrt.ILogger.Severity"
    (pycuda,) = apis["pycuda"]
    assert pycuda.get("pycuda.driver.mem_alloc")[0].returns == "pycuda.driver.DeviceAllocation"
    assert pycuda.get("pycuda.driver.memcpy_htod_async")[0].params == ("dest", "src", "stream=")
    assert pycuda.get("pycuda.driver.Stream.synchronize") and pycuda.get("pycuda.driver.Stream.handle")
    assert any(e.kind == "module" for e in pycuda.get("pycuda.autoinit"))
    assert not pycuda.get("pycuda.driver.DeviceAllocation.__init__")  # py::no_init: only mem_alloc makes one


# -- our code ------------------------------------------------------------------------

REQUIRED = {
    "recipes/formats/tensorrt_engine.py": {
        "tensorrt.Logger", "tensorrt.Builder", "tensorrt.Builder.create_network",
        "tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED", "tensorrt.OnnxParser",
        "tensorrt.OnnxParser.parse_from_file", "tensorrt.OnnxParser.num_errors", "tensorrt.OnnxParser.get_error",
        "tensorrt.ParserError.desc", "tensorrt.Builder.create_builder_config",
        "tensorrt.IBuilderConfig.set_memory_pool_limit", "tensorrt.MemoryPoolType.WORKSPACE",
        "tensorrt.IBuilderConfig.set_flag", "tensorrt.Builder.create_optimization_profile",
        "tensorrt.IOptimizationProfile.set_shape", "tensorrt.IBuilderConfig.add_optimization_profile",
        "tensorrt.IBuilderConfig.create_timing_cache", "tensorrt.IBuilderConfig.set_timing_cache",
        "tensorrt.IBuilderConfig.get_timing_cache", "tensorrt.ITimingCache.serialize",
        "tensorrt.Builder.build_serialized_network", "tensorrt.Runtime.deserialize_cuda_engine",
    },
    "runtime/tensorrt_runner.py": {
        "tensorrt.Runtime", "tensorrt.Runtime.deserialize_cuda_engine", "tensorrt.ICudaEngine.create_execution_context",
        "tensorrt.IExecutionContext.set_input_shape", "tensorrt.ICudaEngine.num_io_tensors",
        "tensorrt.ICudaEngine.get_tensor_name", "tensorrt.ICudaEngine.get_tensor_mode",
        "tensorrt.ICudaEngine.get_tensor_dtype", "tensorrt.IExecutionContext.set_tensor_address",
        "tensorrt.IExecutionContext.execute_async_v3", "tensorrt.IExecutionContext.get_tensor_shape",
        "tensorrt.TensorIOMode.INPUT", "tensorrt.nptype", "pycuda.autoinit", "pycuda.driver.mem_alloc",
        "pycuda.driver.Stream", "pycuda.driver.Stream.handle", "pycuda.driver.Stream.synchronize",
        "pycuda.driver.memcpy_htod_async", "pycuda.driver.memcpy_dtoh_async", "pycuda.driver.pagelocked_empty",
    },
}
# Read with getattr(obj, "NAME", default): version-dependent, present in at least one pinned version.
OPTIONAL = {"recipes/formats/tensorrt_engine.py": {"tensorrt.BuilderFlag.FP16": True, "tensorrt.BuilderFlag.INT8": True},
            "runtime/tensorrt_runner.py": {}}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_our_code_uses_only_real_names(name, sources, apis):
    report = check_source(sources[name], name, apis)
    assert report.errors == []
    assert len(report.versions) == len(apis["tensorrt"]) * len(apis["pycuda"])
    # The checker really followed the code: the calls the build/run needs were all resolved.
    assert REQUIRED[name] <= report.used, sorted(REQUIRED[name] - report.used)
    assert report.optional == OPTIONAL[name]


def device_sources() -> dict[str, str]:
    """The bundle's Python besides the runner: the rendered stub and every other runtime module."""
    found = {"run_engine.py": render("tensorrt/run_engine.py", CONTEXT)}
    for path in sorted((REPO / "runtime").glob("*.py")):
        if path != ENGINE_RUNNER:
            found[f"runtime/{path.name}"] = path.read_text(encoding="utf-8")
    return found


@pytest.mark.parametrize("name", sorted(device_sources()))
def test_api_code_is_only_in_the_runner(name, apis):
    """The checker follows API objects within one file, so no other file may touch them: code that
    moved out of the runner (or back into the stub) would otherwise go unchecked."""
    report = check_source(device_sources()[name], name, apis)
    assert report.errors == [] and report.used == set(), sorted(report.used)


def test_runner_hands_out_no_api_objects(apis):
    """What other files may call takes and returns plain values; functions that take or return
    TensorRT/pycuda objects are private, and nothing outside the runner calls them."""
    from tools.api_check import Checker, is_api

    checker = Checker(ENGINE_RUNNER.read_text(encoding="utf-8"), "runtime/tensorrt_runner.py",
                      {m: versions[0] for m, versions in apis.items()}).run()
    public = [info for info in checker.infos.values() if not info.node.name.startswith("_")]
    assert {info.node.name for info in public} >= {"start", "classify"}
    for info in public:
        assert not is_api(info.returns) and not any(map(is_api, info.annotations.values())), info.node.name
    private = {info.node.name for info in checker.infos.values() if info.node.name.startswith("_")}
    assert private >= {"_load_engine", "_allocate", "_infer"}
    for name, source in device_sources().items():
        assert not [p for p in private if re.search(rf"\b{p}\b", source)], name


def _misspell(source: str, line: int, end_col: int, attr: str) -> str:
    lines = source.splitlines(keepends=True)
    text = lines[line - 1]
    start = end_col - len(attr)
    assert text[start:end_col] == attr, (line, text)
    lines[line - 1] = text[:start] + attr + "_x" + text[end_col:]
    return "".join(lines)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_checked_name_is_caught_when_misspelled(name, sources, apis):
    """Mutation test: each API attribute the checker resolved, misspelled alone, is reported."""
    report = check_source(sources[name], name, apis)
    assert len(report.sites) >= 25
    for line, end_col, attr in sorted(report.sites):
        mutated = check_source(_misspell(sources[name], line, end_col, attr), name, apis)
        assert any(f"{attr}_x" in e for e in mutated.errors), (line, attr, mutated.errors)


# -- the checker catches what it must --------------------------------------------------

def errors_of(code: str, apis) -> list[str]:
    return check_source(code, "snippet.py", apis).errors


GOOD = """
import tensorrt as trt

def build(path):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    return builder.build_serialized_network(network, config) is not None
"""


@pytest.mark.parametrize("text, replacement, message", [
    # a misspelled method, enum value, module attribute
    ("config.set_memory_pool_limit(", "config.set_memory_pool_limt(", "IBuilderConfig.set_memory_pool_limt does not exist"),
    ("MemoryPoolType.WORKSPACE", "MemoryPoolType.WORK_SPACE", "MemoryPoolType.WORK_SPACE does not exist"),
    ("trt.Builder(logger)", "trt.Bulder(logger)", "tensorrt.Bulder does not exist"),
    # a real name on the wrong class: proof that the check is per class, not a flat bag of names
    ("builder.build_serialized_network(network, config)", "network.build_serialized_network(config)",
     "INetworkDefinition.build_serialized_network does not exist"),
    ("builder.create_builder_config()", "network.create_builder_config()",
     "INetworkDefinition.create_builder_config does not exist"),
    # wrong keyword, too many arguments, a missing required argument
    ("(trt.MemoryPoolType.WORKSPACE, 1 << 30)", "(trt.MemoryPoolType.WORKSPACE, size=1 << 30)",
     "set_memory_pool_limit does not accept 1 positional argument(s) and keywords ['size']"),
    ("create_network(1 <<", "create_network(0, 1 <<", "create_network does not accept 2 positional"),
    ("builder.build_serialized_network(network, config)", "builder.build_serialized_network(network)",
     "build_serialized_network does not accept 1 positional argument(s)"),
    # a name that only some pinned versions have, used unguarded
    ("config = builder.create_builder_config()",
     "config = builder.create_builder_config()\n    config.set_flag(trt.BuilderFlag.FP16)",
     "tensorrt.BuilderFlag.FP16 does not exist (class tensorrt.BuilderFlag has no 'FP16') [in pycuda==2026.1 + tensorrt-cu13-bindings==11.4.0.106]"),
    ("1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)",
     "1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)", "EXPLICIT_BATCH does not exist"),
    # a version-guarded name misspelled in every version
    ("config = builder.create_builder_config()",
     "config = builder.create_builder_config()\n    flag = getattr(trt.BuilderFlag, 'FP61', None)",
     "tensorrt.BuilderFlag.FP61 (looked up with getattr/hasattr) exists in no pinned version"),
    # API objects the checker cannot follow are errors, never silently unchecked
    ("config = builder.create_builder_config()",
     "config = builder.create_builder_config()\n    holder = [config]\n    holder[0].set_flg(0)",
     "IBuilderConfig.set_flg does not exist"),
    ("return builder.build_serialized_network(network, config) is not None",
     "return helper(network)\n\ndef helper(net):\n    return net.num_inputs",
     "helper(net) gets tensorrt.INetworkDefinition; annotate the parameter"),
    ("return builder.build_serialized_network(network, config) is not None",
     "return network", "build() returns tensorrt.INetworkDefinition; annotate its return type"),
    ("config = builder.create_builder_config()",
     "config = builder.create_builder_config()\n    self_like = object()\n    self_like.cfg = config",
     "storing tensorrt.IBuilderConfig in .cfg is not tracked"),
    ("network = builder.create_network(",
     "network = builder.create_network()\n    parser = trt.OnnxParser(network, logger)\n    parser.get_error(0).desc()\n    network = builder.create_network(",
     "cannot check .desc"),
    ("return builder.build_serialized_network(network, config) is not None",
     "return Holder(config)\n\nclass Holder:\n    def __init__(self, cfg):\n        self.cfg = cfg",
     "__init__(cfg) gets tensorrt.IBuilderConfig; annotate the parameter"),
    ("import tensorrt as trt", "import tensorrt as trt\nfrom tensorrt import *", "from tensorrt import * hides"),
])
def test_checker_catches(text, replacement, message, apis):
    assert text in GOOD
    errors = errors_of(GOOD.replace(text, replacement, 1), apis)
    assert any(message in e for e in errors), errors


def test_good_snippet_passes(apis):
    assert errors_of(GOOD, apis) == []


PYCUDA_GOOD = """
import pycuda.autoinit
import pycuda.driver as cuda

def copy(host, nbytes):
    stream = cuda.Stream()
    device = cuda.mem_alloc(nbytes)
    cuda.memcpy_htod_async(device, host, stream)
    stream.synchronize()
    return int(device)
"""


@pytest.mark.parametrize("text, replacement, message", [
    ("import pycuda.autoinit", "import pycuda.autoinitt", "module pycuda.autoinitt does not exist"),
    ("stream.synchronize()", "stream.sync()", "pycuda.driver.Stream.sync does not exist"),
    ("cuda.mem_alloc(nbytes)", "cuda.DeviceAllocation(nbytes)", "pycuda.driver.DeviceAllocation() cannot be constructed: pycuda.driver.DeviceAllocation has no constructor"),
    ("cuda.mem_alloc(nbytes)", "cuda.mem_alloc(size=nbytes)", "mem_alloc does not accept 0 positional argument(s) and keywords ['size']"),
    ("(device, host, stream)", "(device, host, stream=stream, async_=True)", "memcpy_htod_async does not accept"),
    ("return int(device)", "return device.gpudata", "pycuda.driver.DeviceAllocation.gpudata does not exist"),
])
def test_checker_catches_pycuda(text, replacement, message, apis):
    assert errors_of(PYCUDA_GOOD, apis) == []
    errors = errors_of(PYCUDA_GOOD.replace(text, replacement, 1), apis)
    assert any(message in e for e in errors), errors


def test_checker_command_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import tensorrt as trt\nlogger = trt.Loger(trt.Logger.WARNING)\n")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "api_check.py"), str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{bad}:2: tensorrt.Loger does not exist" in proc.stdout


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("EDGESMITH_NETWORK_TESTS") != "1",
                    reason="downloads the pinned TensorRT/pycuda artifacts from PyPI; set EDGESMITH_NETWORK_TESTS=1")
def test_fixtures_match_the_real_artifacts():
    """Re-download every pinned artifact (pip checks the committed sha256) and re-extract the names."""
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "extract_api_names.py"), "--check"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok: ") == len(PINS)
