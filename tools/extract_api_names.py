#!/usr/bin/env python3
"""Write the real TensorRT and pycuda API surfaces into committed fixtures.

    python tools/extract_api_names.py             download the pinned artifacts, rewrite tests/fixtures/api/
    python tools/extract_api_names.py --check     download them again; exit 1 if a fixture differs
    python tools/extract_api_names.py --from DIR  use artifacts already in DIR (no download)

tests/test_tensorrt_api.py checks every TensorRT/pycuda name our code uses
against these files, so they must come from the real packages, not from
memory. How:

- TensorRT: the `tensorrt-cuXX-bindings` wheel from PyPI holds the real
  pybind11 module (tensorrt_bindings/tensorrt.so) but no .pyi stubs. Its only
  links into the TensorRT libraries are nine C entry points (every other call
  goes through C++ vtables), so it imports against a stub libnvinfer /
  libnvonnxparser / libnvinfer_plugin compiled here that defines those entry
  points to return NULL. Module initialisation registers every class, enum,
  method and property without calling them, and we list them with dir(),
  inspect and the signatures pybind11 writes into each docstring. Needs cc,
  nm and readelf, and Python 3.11 (the wheels are cp311).
- pycuda: PyPI has only the sdist; its boost.python sources
  (src/wrapper/wrap_cudadrv.cpp, mempool.cpp) and pycuda/driver.py are parsed.

Each fixture starts with a header naming the package, exact version, the
artifact's file name and sha256. Lines are sorted, one name each:

    class tensorrt.Builder
    class tensorrt.Logger.Severity = tensorrt.ILogger.Severity      (alias)
    method tensorrt.Builder.create_network(flags=) -> tensorrt.INetworkDefinition
    property tensorrt.ICudaEngine.num_io_tensors -> int             (read-only)
    setproperty tensorrt.IBuilderConfig.profile_stream -> int       (read-write)
    value tensorrt.MemoryPoolType.WORKSPACE -> tensorrt.MemoryPoolType
    function tensorrt.nptype(trt_type) -> ?
    attribute tensorrt.__version__ -> str
    module pycuda.autoinit

Parameters: `name=` has a default, `*args`/`**kwargs` as usual, `(?)` means
the names are unknown (boost.python without py::arg: positional only).
`-> ?` means the return type is unknown.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the repository's runtime package
from runtime.integrity import sha256_file as sha256  # noqa: E402
FIXTURES = REPO / "tests" / "fixtures" / "api"
HEADER = "# edgesmith API fixture, written by tools/extract_api_names.py; do not edit by hand."


@dataclass(frozen=True)
class Pin:
    module: str        # the import name our code uses
    package: str       # the PyPI distribution the names come from
    version: str
    why: str

    @property
    def fixture(self) -> Path:
        return FIXTURES / f"{self.module}-{self.version}.txt"


PINS = (
    # JetPack 6.x (Jetson Orin) ships TensorRT 10.3: the oldest we support.
    Pin("tensorrt", "tensorrt-cu12-bindings", "10.3.0", "JetPack 6 (Jetson Orin) TensorRT"),
    Pin("tensorrt", "tensorrt-cu12-bindings", "10.16.1.11", "newest TensorRT 10"),
    Pin("tensorrt", "tensorrt-cu13-bindings", "11.4.0.106", "newest TensorRT 11"),
    Pin("pycuda", "pycuda", "2026.1", "newest pycuda"),
)

# The wheels we import are built for CPython 3.11 on x86-64 Linux; the API is
# the same on aarch64 (JetPack builds the same pybind11 sources).
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64")


class ExtractError(Exception):
    pass


# -- downloading ---------------------------------------------------------------

def download(pin: Pin, dest: Path, expect_sha256: str | None = None) -> Path:
    """`pip download` the pinned artifact; with expect_sha256 pip itself refuses other bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    spec = f"{pin.package}=={pin.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest)]
    if pin.package == "pycuda":
        cmd += ["--no-binary", "pycuda"]
    else:
        cmd += ["--only-binary=:all:", "--python-version", "3.11"]
        for platform in WHEEL_PLATFORMS:
            cmd += ["--platform", platform]
    if expect_sha256:
        req = dest / f"{pin.package}-{pin.version}.req"
        req.write_text(f"{spec} --hash=sha256:{expect_sha256}\n")
        cmd += ["--require-hashes", "-r", str(req)]
    else:
        cmd.append(spec)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-2:])
        raise ExtractError(f"pip download {spec} failed: {tail}")
    return find_artifact(pin, dest)


def find_artifact(pin: Pin, directory: Path) -> Path:
    stem = pin.package.replace("-", "_")
    suffix = ".tar.gz" if pin.package == "pycuda" else ".whl"
    hits = sorted(p for p in Path(directory).iterdir()
                  if p.name.lower().startswith(f"{stem}-{pin.version}".lower()) and p.name.endswith(suffix))
    if not hits:
        raise ExtractError(f"no {stem}-{pin.version}*{suffix} in {directory}")
    return hits[0]


# -- TensorRT: import the real bindings against stub libraries ---------------

def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ExtractError(f"{name} not found; TensorRT extraction needs cc, nm and readelf (binutils, gcc)")
    return path


def _stub_libraries(so: Path, work: Path) -> Path:
    """Compile libraries that satisfy the bindings' NEEDED TensorRT libs with NULL-returning entry points."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                        subprocess.run([_tool("readelf"), "-d", str(so)], capture_output=True, text=True, check=True).stdout)
    ours = [lib for lib in needed if lib.startswith("libnv")]
    undefined = subprocess.run([_tool("nm"), "-D", "--undefined-only", str(so)], capture_output=True, text=True,
                               check=True).stdout.split("\n")
    symbols = sorted({line.split()[-1] for line in undefined
                      if line.strip().startswith("U ") and "@" not in line and not line.split()[-1].startswith(("Py", "_Py"))})
    if not ours or not symbols:
        raise ExtractError(f"{so.name}: unexpected link layout (NEEDED {needed}, entry points {symbols})")
    if any(not re.fullmatch(r"[A-Za-z_]\w*", s) for s in symbols):
        raise ExtractError(f"{so.name}: the bindings now link C++ symbols from TensorRT ({symbols[:3]}...); "
                           "the stub approach needs updating")
    stub_dir = work / "stubs"
    stub_dir.mkdir()
    source = stub_dir / "stub.c"
    source.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
    for lib in ours:
        subprocess.run([_tool("cc"), "-shared", "-fPIC", "-o", str(stub_dir / lib), str(source)], check=True)
    return stub_dir


# Runs in a child process (the stubs must be on LD_LIBRARY_PATH before start).
INTROSPECT = r'''
import inspect, json, re, sys, types
sys.path.insert(0, sys.argv[1])
import tensorrt_bindings as mod

PUBLIC_DUNDERS = ("__init__", "__getitem__", "__setitem__", "__len__", "__iter__", "__int__", "__index__")
lines = set()

def norm(text):
    text = text.replace("tensorrt_bindings.tensorrt.", "tensorrt.").replace("tensorrt_bindings.", "tensorrt.")
    return " ".join(text.split())

def canon(cls):
    return norm(f"{cls.__module__}.{cls.__qualname__}")

def ours(cls):
    return cls.__module__.startswith("tensorrt_bindings")

def split_params(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(<{": depth += 1
        if ch in "])>}": depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur); cur = ""
        else:
            cur += ch
    if cur.strip(): parts.append(cur)
    out = []
    for p in parts:
        p = p.strip()
        if p in ("*", "/"):
            continue  # keyword-only / positional-only markers
        m = re.match(r"(\*{0,2}\w+)", p)
        if not m:
            raise ValueError(f"cannot parse parameter {p!r}")
        name = m.group(1)
        if name in ("self",) or p.startswith("self:"):
            continue
        out.append(name + ("=" if "=" in p and not name.startswith("*") else ""))
    return out

def pybind_sigs(name, doc):
    """pybind11 puts `name(params) -> ret` (or numbered overloads) at the top of __doc__."""
    sigs = []
    for line in (doc or "").splitlines():
        m = re.match(r"^(?:\d+\. )?" + re.escape(name) + r"\((.*)\) -> (.*)$", line.strip())
        if m and m.group(1) != "*args, **kwargs":
            sigs.append((split_params(m.group(1)), norm(m.group(2))))
    return sigs

def prop_type(doc):
    m = re.match(r"^\((.*)\) -> (.*)$", (doc or "").strip().splitlines()[0] if (doc or "").strip() else "")
    return norm(m.group(2)) if m else "?"

def py_sig(func):
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    params = []
    for p in sig.parameters.values():
        if p.name == "self": continue
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        params.append(prefix + p.name + ("=" if p.default is not p.empty else ""))
    return params

def emit_callable(kind, qual, name, obj):
    sigs = pybind_sigs(name, getattr(obj, "__doc__", None))
    if not sigs:
        params = py_sig(obj)
        if params is None:
            return False
        sigs = [(params, "?")]
    for params, ret in sigs:
        lines.add(f"{kind} {qual}({', '.join(params)}) -> {ret}")
    return True

walked = set()

def walk_class(cls):
    qual = canon(cls)
    if qual in walked: return
    walked.add(qual)
    for mname in dir(cls):
        if mname.startswith("_") and mname not in PUBLIC_DUNDERS: continue
        try:
            static = inspect.getattr_static(cls, mname)
            obj = getattr(cls, mname)
        except AttributeError:
            continue
        full = f"{qual}.{mname}"
        if isinstance(static, property):
            kind = "setproperty" if static.fset is not None else "property"
            lines.add(f"{kind} {full} -> {prop_type(static.fget.__doc__) if static.fget else '?'}")
        elif inspect.isclass(obj):
            if ours(obj):
                lines.add(f"class {full}" + ("" if canon(obj) == full else f" = {canon(obj)}"))
                walk_class(obj)
            else:
                lines.add(f"attribute {full} -> {obj.__name__}")
        elif ours(type(obj)) and not callable(obj):
            lines.add(f"value {full} -> {canon(type(obj))}")
        elif callable(obj):
            if mname == "__init__" and not pybind_sigs(mname, obj.__doc__) and not inspect.isfunction(obj):
                continue  # pybind11's default __init__: "No constructor defined"
            if not emit_callable("method", full, mname, obj):
                lines.add(f"method {full}(?) -> ?")
        else:
            lines.add(f"attribute {full} -> {type(obj).__name__}")

for name in dir(mod):
    if name.startswith("_") and name != "__version__": continue
    obj = getattr(mod, name)
    full = f"tensorrt.{name}"
    if isinstance(obj, types.ModuleType):
        lines.add(f"module {full}")
    elif inspect.isclass(obj):
        if ours(obj):
            lines.add(f"class {full}" + ("" if canon(obj) == full else f" = {canon(obj)}"))
            walk_class(obj)
    elif ours(type(obj)) and not callable(obj):
        lines.add(f"value {full} -> {canon(type(obj))}")
    elif callable(obj):
        if not emit_callable("function", full, name, obj):
            lines.add(f"function {full}(?) -> ?")
    else:
        lines.add(f"attribute {full} -> {type(obj).__name__}")
lines.add("module tensorrt")
print(json.dumps({"version": mod.__version__, "lines": sorted(lines)}))
'''


def extract_tensorrt(wheel: Path, pin: Pin) -> list[str]:
    if sys.version_info[:2] != (3, 11):
        raise ExtractError(f"the pinned TensorRT wheels are cp311; run this with Python 3.11, not {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(work / "wheel")
        so = work / "wheel" / "tensorrt_bindings" / "tensorrt.so"
        if not so.is_file():
            raise ExtractError(f"{wheel.name} has no tensorrt_bindings/tensorrt.so")
        stubs = _stub_libraries(so, work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["LD_LIBRARY_PATH"] = str(stubs)
        proc = subprocess.run([sys.executable, "-c", INTROSPECT, str(work / "wheel")], capture_output=True, text=True,
                              env=env, cwd=work)
        if proc.returncode != 0:
            raise ExtractError(f"importing {wheel.name} against stub libraries failed: {proc.stderr.strip()[-500:]}")
        data = json.loads(proc.stdout)
    if data["version"] != pin.version:
        raise ExtractError(f"{wheel.name} reports __version__ {data['version']}, expected {pin.version}")
    return data["lines"]


# -- pycuda: parse the boost.python sources -----------------------------------

def _strip_cpp(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    out = []
    for line in text.splitlines():
        line = re.sub(r"//.*", "", line)
        if line.lstrip().startswith("#"):
            continue  # #if CUDAPP_CUDA_VERSION >= ...: keep both sides (CUDA 11+ has them all)
        out.append(line)
    return "\n".join(out)


def _statements(text: str) -> list[str]:
    """Split C++ at top-level ';' (outside parentheses and string literals)."""
    out, depth, cur, i, in_str = [], 0, [], 0, False
    while i < len(text):
        ch = text[i]
        cur.append(ch)
        if in_str:
            if ch == "\\":
                cur.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in ";{}" and depth == 0:
            out.append("".join(cur))
            cur = []
        i += 1
    out.append("".join(cur))
    return out


_CLASS = re.compile(r'py::class_<((?:[^<>]|<(?:[^<>]|<[^<>]*>)*>)*)>\s*(\w+)?\s*\(\s*"(\w+)"')
_TYPEDEF_CL = re.compile(r"typedef\s+([\w:<>, ]+?)\s+cl\s*;")


def _arg_names(call: str) -> list[str] | None:
    names = []
    for m in re.finditer(r'py::args?\s*\(([^()]*)\)(\s*=)?', call):
        quoted = re.findall(r'"(\w+)"', m.group(1))
        names += [q + ("=" if m.group(2) and i == len(quoted) - 1 else "") for i, q in enumerate(quoted)]
    names = [n for n in names if n.rstrip("=") != "self"]
    return names or None


def _def_calls(chain: str) -> list[tuple[str, str]]:
    """(python name, the def's argument text) for each .def/.add_property... in a class chain."""
    out = []
    for m in re.finditer(r'\.\s*(def|add_property|add_static_property|def_readonly|def_readwrite|staticmethod)\s*\(\s*"(\w+)"', chain):
        start = m.end()
        depth, j = 1, start
        while j < len(chain) and depth:
            depth += {"(": 1, ")": -1}.get(chain[j], 0)
            j += 1
        out.append((m.group(1), m.group(2), chain[start:j - 1]))
    for m in re.finditer(r"\.\s*DEF_SIMPLE_(METHOD|METHOD_WITH_ARGS|RO_MEMBER|RW_MEMBER)\s*\(\s*(\w+)\s*(?:,([^;]*?))?\)", chain):
        kind = {"METHOD": "def", "METHOD_WITH_ARGS": "def", "RO_MEMBER": "def_readonly", "RW_MEMBER": "def_readwrite"}[m.group(1)]
        out.append((kind, m.group(2), f"&cl::{m.group(2)}" + (f", py::args{m.group(3)}" if m.group(3) else "")))
    return out


def _cpp_return(func: str, sources: str, classes: dict[str, str]) -> str:
    """Return type of a C++ function/method, as a pycuda.driver class if it is one."""
    func = func.split("::")[-1].strip("&* ")
    if not re.fullmatch(r"\w+", func):
        return "?"
    found = set()
    for m in re.finditer(r"(?:^|[\s;{}])((?:const\s+)?[\w:]+(?:<[\w:<> ,]*>)?\s*\*?)\s*\b" + func + r"\s*\(", sources):
        ret = m.group(1).strip()
        if ret in ("return", "new", "else", "delete") or ret.endswith((".", "::")):
            continue  # a call, or the `cls::` of an out-of-class definition (its declaration is matched too)
        base = re.sub(r"^(const\s+)?((boost|std)::)?(shared_ptr|auto_ptr|unique_ptr)<\s*(.*?)\s*>$", r"\5", ret).strip("* ")
        base = base.split("::")[-1]
        found.add(f"pycuda.driver.{classes[base]}" if base in classes else
                  ret if ret in ("void", "bool", "int", "unsigned", "size_t", "float", "double", "py::tuple",
                                 "py::object", "py::list", "std::string", "CUdeviceptr") else "?")
    return found.pop() if len(found) == 1 else "?"


def extract_pycuda(sdist: Path, pin: Pin) -> list[str]:
    with tarfile.open(sdist) as tar:
        root = f"pycuda-{pin.version}/"
        want = {"src/wrapper/wrap_cudadrv.cpp", "src/wrapper/mempool.cpp", "src/cpp/cuda.hpp", "pycuda/driver.py"}
        members = {m.name[len(root):]: m for m in tar.getmembers() if m.name.startswith(root)}
        missing = want - set(members)
        if missing:
            raise ExtractError(f"{sdist.name} lacks {sorted(missing)}")
        text = {name: tar.extractfile(members[name]).read().decode("utf-8") for name in want}
        modules = sorted(name[:-3].replace("/", ".") for name in members
                         if re.fullmatch(r"pycuda/\w+\.py", name) or re.fullmatch(r"pycuda/\w+/__init__\.py", name))
    lines = {"module pycuda"} | {f"module {m.removesuffix('.__init__')}" for m in modules}
    wrappers = _strip_cpp(text["src/wrapper/wrap_cudadrv.cpp"]) + "\n" + _strip_cpp(text["src/wrapper/mempool.cpp"])
    sources = wrappers + "\n" + _strip_cpp(text["src/cpp/cuda.hpp"])
    statements = _statements(wrappers)

    # C++ type -> Python class, from `typedef T cl; py::class_<cl ...>("Name"`.
    classes: dict[str, str] = {}
    typedef = None
    for stmt in statements:
        m = _TYPEDEF_CL.search(stmt)
        if m:
            typedef = m.group(1).strip().split("::")[-1]
        c = _CLASS.search(stmt)
        if c and typedef:
            classes[re.sub(r"<.*", "", typedef)] = c.group(3)
    mod = "pycuda.driver"
    variables: dict[str, str] = {}  # `py::class_<...> wrapper("Name")` then `wrapper.def(...)`
    for stmt in statements:
        c = _CLASS.search(stmt)
        if c:
            name = c.group(3)
            lines.add(f"class {mod}.{name}")
            if c.group(2):
                variables[c.group(2)] = name
            init = re.search(r'"\w+"\s*,\s*(py::init<.*)', stmt[c.start():], re.S)
            if init:
                params = _arg_names(init.group(1)[: init.group(1).find(")") + 1] if "py::arg" not in init.group(1)
                                    else init.group(1))
                lines.add(f"method {mod}.{name}.__init__({', '.join(params) if params else '?'}) -> None")
            chain = stmt[c.end():]
        else:
            v = re.match(r"\s*(\w+)\s*\.", stmt)
            if not (v and v.group(1) in variables):
                m = re.match(r'\s*(?:py::|boost::python::)?def\s*\(\s*"(\w+)"\s*,\s*([\w:<>&]+)(.*)', stmt, re.S)
                s = re.match(r"\s*DEF_SIMPLE_FUNCTION(?:_WITH_ARGS)?\s*\(\s*(\w+)(.*)", stmt, re.S)
                if m:
                    params = _arg_names(m.group(3))
                    lines.add(f"function {mod}.{m.group(1)}({', '.join(params) if params else '?'}) -> "
                              f"{_cpp_return(m.group(2), sources, classes)}")
                elif s:
                    params = _arg_names("py::args" + s.group(2)) if s.group(2).strip(" ,)") else None
                    lines.add(f"function {mod}.{s.group(1)}({', '.join(params) if params else '?'}) -> "
                              f"{_cpp_return(s.group(1), sources, classes)}")
                for e in re.finditer(r"py::enum_<[^>]*>\s*\(\s*\"(\w+)\"\s*\)", stmt):
                    lines.add(f"class {mod}.{e.group(1)}")
                    for val in re.findall(r'\.value\s*\(\s*"(\w+)"', stmt[e.end():]):
                        lines.add(f"value {mod}.{e.group(1)}.{val} -> {mod}.{e.group(1)}")
                for x in re.finditer(r"DECLARE_EXC\s*\(\s*(\w+)", stmt):
                    if "#define" not in stmt:
                        lines.add(f"class {mod}.{x.group(1)}")
                continue
            name = variables[v.group(1)]
            chain = stmt[v.end() - 1:]
        for kind, member, args in _def_calls(chain):
            full = f"{mod}.{name}.{member}"
            if kind == "staticmethod":
                continue  # marks an earlier .def as static; the name is already there
            if kind in ("add_property", "def_readonly", "add_static_property"):
                setter = kind == "add_property" and len([a for a in args.split(",") if a.strip()]) > 1
                lines.add(f"{'setproperty' if setter else 'property'} {full} -> "
                          f"{_cpp_return(args.split(',')[0], sources, classes)}")
            elif kind == "def_readwrite":
                lines.add(f"setproperty {full} -> ?")
            elif member.startswith("_") and member not in ("__init__", "__int__", "__index__", "__len__",
                                                             "__getitem__", "__iter__"):
                continue
            else:
                params = _arg_names(args)
                ret = _cpp_return(args.split(",")[0], sources, classes) if args.strip() else "?"
                lines.add(f"method {full}({', '.join(params) if params else '?'}) -> {ret}")
    known = {line.split()[1].rsplit(".", 1)[1] for line in lines if line.startswith("class ")}
    lines |= _pycuda_python(text["pycuda/driver.py"], mod, known)
    return sorted(lines)


def _py_params(fn: ast.FunctionDef, drop_first: bool) -> str:
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    params = [p.arg + ("=" if d is not None else "") for p, d in zip(positional, defaults)]
    if drop_first and params:
        params = params[1:]
    params += [f"*{a.vararg.arg}"] if a.vararg else []
    params += [k.arg + ("=" if d is not None else "") for k, d in zip(a.kwonlyargs, a.kw_defaults)]
    params += [f"**{a.kwarg.arg}"] if a.kwarg else []
    return ", ".join(params)


def _pycuda_python(source: str, mod: str, classes: set[str]) -> set[str]:
    """Names pycuda/driver.py adds on top of `from pycuda._driver import *`."""
    lines: set[str] = set()
    tree = ast.parse(source)
    helpers = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            lines.add(f"function {mod}.{node.name}({_py_params(node, False)}) -> ?")
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            lines.add(f"class {mod}.{node.name}")
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and (not item.name.startswith("_") or item.name == "__init__"):
                    lines.add(f"method {mod}.{node.name}.{item.name}({_py_params(item, True)}) -> ?")
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and not target.id.startswith("_"):
                    lines.add(f"attribute {mod}.{target.id} -> ?")
        elif isinstance(node, ast.FunctionDef) and node.name == "_add_functionality":
            for inner in ast.walk(node):
                if isinstance(inner, ast.FunctionDef):
                    helpers[inner.name] = inner
            for inner in ast.walk(node):
                if isinstance(inner, ast.Assign) and len(inner.targets) == 1:
                    t = inner.targets[0]
                    if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in classes
                            and (not t.attr.startswith("_") or t.attr == "__call__")):
                        fn = helpers.get(inner.value.id) if isinstance(inner.value, ast.Name) else None
                        params = _py_params(fn, True) if fn else "?"
                        lines.add(f"method {mod}.{t.value.id}.{t.attr}({params}) -> ?")
    return lines


# -- fixtures ------------------------------------------------------------------

def render_fixture(pin: Pin, artifact: Path, lines: list[str]) -> str:
    head = [
        HEADER,
        f"# module: {pin.module}",
        f"# package: {pin.package}=={pin.version}",
        f"# artifact: {artifact.name}",
        f"# sha256: {sha256(artifact)}",
        f"# why: {pin.why}",
    ]
    return "\n".join(head + lines) + "\n"


def fixture_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    m = re.search(r"^# sha256: ([0-9a-f]{64})$", path.read_text(encoding="utf-8"), re.M)
    return m.group(1) if m else None


def extract(pin: Pin, artifact: Path) -> str:
    lines = extract_pycuda(artifact, pin) if pin.package == "pycuda" else extract_tensorrt(artifact, pin)
    if len(lines) < 50:
        raise ExtractError(f"{artifact.name}: only {len(lines)} names extracted; the extractor is broken")
    return render_fixture(pin, artifact, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed fixtures instead of writing")
    parser.add_argument("--from", dest="source", help="directory with the artifacts already downloaded")
    parser.add_argument("--out", default=str(FIXTURES), help="fixture directory (default: %(default)s)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        for pin in PINS:
            target = out / pin.fixture.name
            try:
                if args.source:
                    artifact = find_artifact(pin, Path(args.source))
                else:
                    # --check pins the committed sha256: pip refuses any other bytes.
                    artifact = download(pin, Path(tmp), fixture_sha256(target) if args.check else None)
                text = extract(pin, artifact)
            except ExtractError as e:
                print(f"extract_api_names: {pin.package}=={pin.version}: {e}", file=sys.stderr)
                return 2
            if args.check:
                same = target.is_file() and target.read_text(encoding="utf-8") == text
                print(f"{'ok' if same else 'DIFFERS'}: {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")
                status |= 0 if same else 1
            else:
                out.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
                print(f"wrote {target} ({text.count(chr(10)) - 6} names)")
    return status


if __name__ == "__main__":
    sys.exit(main())
