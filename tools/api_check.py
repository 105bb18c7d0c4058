#!/usr/bin/env python3
"""Check that every TensorRT / pycuda name a Python file uses exists in the real packages.

    python tools/api_check.py recipes/formats/tensorrt_engine.py runtime/tensorrt_runner.py

The names come from tests/fixtures/api/*.txt (see tools/extract_api_names.py):
every class, enum value, method with its parameter names, and property with
its type, per pinned package version. The check is a small type inference
over the file's AST:

- module aliases come from the file's imports (`import tensorrt as trt`,
  `import pycuda.driver as cuda`, `import pycuda.autoinit`);
- `trt.Builder(logger)` holds a tensorrt.Builder, and `builder.create_network()`
  holds what the real signature returns (tensorrt.INetworkDefinition), so
  `network.foo` is checked against INetworkDefinition's own members, not
  against a flat bag of every name in the package;
- calls are checked for keyword names and argument counts against the real
  parameter lists (all overloads);
- a name must exist in EVERY pinned version of its package, unless it is read
  with a literal `getattr(obj, "NAME", default)` / `hasattr(obj, "NAME")`:
  then it must exist in at least one (version-dependent feature detection).

It never guesses. An API value whose class is unknown (an unresolved return
type, a value stored in a place the checker does not track) makes any
attribute use of it an error that says how to make it checkable: keep API
objects in local variables, annotate function parameters/returns with the
API class (`network: trt.INetworkDefinition`), or annotate a local
(`error: trt.ParserError = parser.get_error(i)`), which is itself checked.
"""
from __future__ import annotations

import ast
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "api"
_LINE = re.compile(r"^(\w+) ([\w.]+)(?:\((.*?)\))?(?: = ([\w.]+))?(?: -> (.*))?$")


# -- fixtures ------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    kind: str                              # class method function property setproperty value attribute module
    name: str                              # full dotted name, e.g. tensorrt.Builder.create_network
    params: Optional[tuple[str, ...]]      # None: unknown (positional only, count unchecked)
    returns: str                           # type text; "?" unknown; canonical class for aliases/values


class Api:
    """One fixture file: the names of one package version."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.header: dict[str, str] = {}
        self.entries: dict[str, list[Entry]] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                key, _, value = line[1:].partition(":")
                if value:
                    self.header[key.strip()] = value.strip()
                continue
            m = _LINE.match(line)
            if not m:
                raise ValueError(f"{self.path}: cannot parse fixture line {line!r}")
            kind, name, params, alias, returns = m.groups()
            plist = None if params in (None, "?") else tuple(p.strip() for p in params.split(",") if p.strip())
            if kind in ("method", "function") and params is None:
                plist = None
            self.entries.setdefault(name, []).append(Entry(kind, name, plist, alias or returns or "?"))
        self.module = self.header["module"]
        self.label = self.header["package"]
        self.classes = {n for n, es in self.entries.items() if es[0].kind == "class"}

    def get(self, name: str) -> list[Entry]:
        return self.entries.get(name, [])

    def canonical(self, cls: str) -> str:
        entries = self.get(cls)
        return entries[0].returns if entries and entries[0].kind == "class" and entries[0].returns != "?" else cls


def load_apis(directory: Path = FIXTURES) -> dict[str, list[Api]]:
    """Fixtures grouped by top-level module ("tensorrt", "pycuda")."""
    apis: dict[str, list[Api]] = {}
    for path in sorted(Path(directory).glob("*.txt")):
        api = Api(path)
        apis.setdefault(api.module, []).append(api)
    return apis


# -- types ---------------------------------------------------------------------
# None stands for "not an API value" (str, numpy array, ...): never checked.

@dataclass(frozen=True)
class ModuleT:
    name: str


@dataclass(frozen=True)
class ClassT:
    name: str


@dataclass(frozen=True)
class InstT:
    name: str


@dataclass(frozen=True)
class CallT:
    name: str
    bound: bool


@dataclass(frozen=True)
class ContainerT:
    elem: object


@dataclass(frozen=True)
class TupleT:
    items: tuple


@dataclass(frozen=True)
class UnknownT:
    why: str


UNCHECKED = UnknownT("unchecked")  # follows an error already reported: stay quiet about it


def is_api(t) -> bool:
    return t is not None


def join(a, b):
    if a is None:
        return b
    if b is None or a == b:
        return a
    if isinstance(a, ContainerT) and isinstance(b, ContainerT):
        return ContainerT(join(a.elem, b.elem))
    if isinstance(a, UnknownT):
        return a
    if isinstance(b, UnknownT):
        return b
    return UnknownT(f"holds both {describe(a)} and {describe(b)}")


def describe(t) -> str:
    if isinstance(t, (ModuleT, ClassT, InstT)):
        return t.name
    if isinstance(t, ContainerT):
        return f"a container of {describe(t.elem)}"
    if isinstance(t, CallT):
        return f"{t.name}()"
    return "an untracked API value"


BUILTIN_ITER = {"values": "elem", "get": "elem", "pop": "elem", "setdefault": "elem", "items": "items"}


# -- the checker -----------------------------------------------------------------

@dataclass
class FunctionInfo:
    node: ast.AST
    params: list[str]
    annotations: dict[str, object] = field(default_factory=dict)
    returns: object = None
    method: bool = False


class Checker:
    """Checks one source file against one Api per module."""

    def __init__(self, source: str, filename: str, apis: dict[str, Api]):
        self.tree = ast.parse(source, filename)
        self.filename = filename
        self.apis = apis
        self.errors: dict[tuple[int, str], None] = {}
        self.used: set[str] = set()
        self.sites: set[tuple[int, int, str]] = set()  # (line, end column, name) of each checked attribute
        self.optional: dict[str, bool] = {}
        self.quiet = False
        self.globals: dict[str, object] = {}
        self.infos: dict[ast.AST, FunctionInfo] = {}             # every def in the file
        self.functions: dict[str, list[FunctionInfo]] = {}       # module-level and nested functions by name
        self.methods: dict[str, list[FunctionInfo]] = {}         # methods of local classes by name
        self.classes: dict[str, list[FunctionInfo]] = {}         # local class -> its __init__ (if any)

    # -- reporting
    def error(self, node: ast.AST, message: str) -> None:
        if not self.quiet:
            self.errors[(getattr(node, "lineno", 0), message)] = None

    def api_for(self, name: str) -> Optional[Api]:
        return self.apis.get(name.split(".")[0])

    # -- entry
    def run(self) -> "Checker":
        self._imports()
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.infos[node] = FunctionInfo(node, [a.arg for a in node.args.posonlyargs + node.args.args
                                                       + node.args.kwonlyargs])
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ClassDef):
                self.classes.setdefault(node.name, [])
                for item in node.body:
                    if item in self.infos:
                        self.infos[item].method = True
                        self.methods.setdefault(item.name, []).append(self.infos[item])
                        if item.name == "__init__":
                            self.classes[node.name].append(self.infos[item])
        for node, info in self.infos.items():
            if not info.method:
                self.functions.setdefault(node.name, []).append(info)
        for info in self.infos.values():
            for arg in info.node.args.posonlyargs + info.node.args.args + info.node.args.kwonlyargs:
                if arg.annotation is not None:
                    info.annotations[arg.arg] = self.annotation(arg.annotation, self.globals)
            if info.node.returns is not None:
                info.returns = self.annotation(info.node.returns, self.globals)
        self.block(self.tree.body, self.globals, None, passes=2)
        return self

    def _imports(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    api = self.api_for(alias.name)
                    if api is None:
                        continue
                    self.need_module(node, api, alias.name)
                    if alias.asname:
                        self.globals[alias.asname] = ModuleT(alias.name)
                    else:
                        root = alias.name.split(".")[0]
                        self.need_module(node, api, root)
                        self.globals[root] = ModuleT(root)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                api = self.api_for(node.module)
                if api is None:
                    continue
                self.need_module(node, api, node.module)
                for alias in node.names:
                    if alias.name == "*":
                        self.error(node, f"from {node.module} import * hides which names are used; import the module")
                        continue
                    sub = f"{node.module}.{alias.name}"
                    if api.get(sub) and api.get(sub)[0].kind == "module":
                        self.used.add(sub)
                        self.globals[alias.asname or alias.name] = ModuleT(sub)
                    else:
                        self.globals[alias.asname or alias.name] = self.member(node, ModuleT(node.module), alias.name)

    def need_module(self, node: ast.AST, api: Api, name: str) -> None:
        if not any(e.kind == "module" for e in api.get(name)):
            self.error(node, f"module {name} does not exist")
        self.used.add(name)

    # -- statements
    def block(self, body: list[ast.stmt], env: dict, fn: Optional[FunctionInfo], passes: int = 1) -> None:
        quiet = self.quiet
        for i in range(passes):
            # Earlier passes only let types flow backwards through loops; only the last one reports.
            last = i == passes - 1
            self.quiet = quiet or not last
            for stmt in body:
                # A def's body does not change the enclosing types: check it once, on the last pass.
                if last or not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self.stmt(stmt, env, fn)
        self.quiet = quiet

    def stmt(self, node: ast.stmt, env: dict, fn: Optional[FunctionInfo]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            info = self.infos[node]
            for deco in node.decorator_list:
                self.expr(deco, env)
            local = dict(env)
            for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
                local[arg.arg] = info.annotations.get(arg.arg) if arg.annotation is not None else None
            for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                self.expr(default, env)
            self.block(node.body, local, info, passes=2)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    if is_api(self.annotation(item.annotation, env)):
                        self.error(item, "API objects as class attributes are not tracked; keep them in local variables")
                else:
                    self.stmt(item, env, fn)
        elif isinstance(node, ast.Return):
            t = self.expr(node.value, env) if node.value is not None else None
            if is_api(t) and fn is not None:
                declared = fn.returns
                if not is_api(declared):
                    self.error(node, f"{fn.node.name}() returns {describe(t)}; annotate its return type "
                                     "(e.g. -> trt.ICudaEngine) so callers are checked")
                elif not self.compatible(declared, t):
                    self.error(node, f"{fn.node.name}() is annotated to return {describe(declared)} but returns {describe(t)}")
        elif isinstance(node, ast.Assign):
            t = self.expr(node.value, env)
            for target in node.targets:
                self.assign(target, t, env, node)
        elif isinstance(node, ast.AnnAssign):
            declared = self.annotation(node.annotation, env)
            t = self.expr(node.value, env) if node.value is not None else None
            if is_api(declared) and isinstance(node.target, ast.Name):
                if is_api(t) and not isinstance(t, UnknownT) and not self.compatible(declared, t):
                    self.error(node, f"{node.target.id} is annotated {describe(declared)} but is given {describe(t)}")
                env[node.target.id] = declared
            else:
                self.assign(node.target, t, env, node)
        elif isinstance(node, ast.AugAssign):
            self.expr(node.target, env)
            self.expr(node.value, env)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            it = self.iterate(node.iter, env)
            self.assign(node.target, it, env, node)
            self.block(node.body, env, fn)
            self.block(node.orelse, env, fn)
        elif isinstance(node, (ast.While, ast.If)):
            self.expr(node.test, env)
            self.block(node.body, env, fn)
            self.block(node.orelse, env, fn)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                t = self.expr(item.context_expr, env)
                if is_api(t):
                    self.error(item.context_expr, f"`with` on {describe(t)} is not tracked (and TensorRT 10 deprecates "
                                                  "context managers); use a plain assignment")
                if item.optional_vars is not None:
                    self.assign(item.optional_vars, None, env, node)
            self.block(node.body, env, fn)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            self.block(node.body, env, fn)
            for handler in node.handlers:
                if handler.type is not None:
                    self.expr(handler.type, env)
                if handler.name:
                    env[handler.name] = join(env.get(handler.name), None)
                self.block(handler.body, env, fn)
            self.block(node.orelse, env, fn)
            self.block(node.finalbody, env, fn)
        elif isinstance(node, ast.Expr):
            self.expr(node.value, env)
        elif isinstance(node, (ast.Raise, ast.Assert, ast.Delete)):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child, env)
        elif isinstance(node, ast.Match):
            self.expr(node.subject, env)
            for case in node.cases:
                self.block(case.body, env, fn)
        # Import, Global, Nonlocal, Pass, Break, Continue: nothing to check.

    def assign(self, target: ast.expr, t, env: dict, node: ast.AST) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = join(env.get(target.id), t)
        elif isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(t, TupleT) and len(t.items) == len(target.elts):
                for sub, st in zip(target.elts, t.items):
                    self.assign(sub, st, env, node)
            elif is_api(t):
                self.error(node, f"unpacking {describe(t)} is not tracked; assign it to one variable first")
            else:
                for sub in target.elts:
                    self.assign(sub.value if isinstance(sub, ast.Starred) else sub, None, env, node)
        elif isinstance(target, ast.Subscript):
            self.expr(target.slice, env)
            if isinstance(target.value, ast.Name) and target.value.id in env and not isinstance(env[target.value.id], (InstT, ModuleT, ClassT)):
                if is_api(t):
                    env[target.value.id] = join(env.get(target.value.id), ContainerT(t))
                else:
                    self.expr(target.value, env)
            else:
                holder = self.expr(target.value, env)
                if isinstance(holder, InstT):
                    self.check_callable(target, holder.name + ".__setitem__", [])
                elif is_api(t) and not isinstance(holder, ContainerT):
                    self.error(node, f"storing {describe(t)} here is not tracked; keep it in a local variable or dict")
        elif isinstance(target, ast.Attribute):
            holder = self.expr(target.value, env)
            if isinstance(holder, (InstT, ClassT, ModuleT)):
                entries = self.lookup(target, holder, target.attr)
                if entries and entries[0].kind not in ("setproperty", "attribute"):
                    self.error(target, f"{entries[0].name} is a read-only {entries[0].kind}")
            elif isinstance(holder, UnknownT) and holder is not UNCHECKED:
                self.error(target, f"cannot check .{target.attr}: the object is {holder.why}")
            elif is_api(t):
                self.error(node, f"storing {describe(t)} in .{target.attr} is not tracked; keep API objects in local variables")
        elif isinstance(target, ast.Starred):
            self.assign(target.value, t, env, node)

    def iterate(self, node: ast.expr, env: dict):
        t = self.expr(node, env)
        if isinstance(t, ContainerT):
            return t.elem
        if isinstance(t, InstT):
            getitem = self.api_for(t.name).get(t.name + ".__getitem__")
            if getitem:
                self.used.add(getitem[0].name)
                return self.from_text(getitem[0].returns, t.name)
            self.error(node, f"{t.name} is not iterable")
            return UnknownT("an unknown element")
        if isinstance(t, (UnknownT, ClassT, ModuleT, CallT)):
            return UnknownT(f"an element of {describe(t)}")
        return None

    # -- expressions
    def expr(self, node: Optional[ast.expr], env: dict):
        if node is None:
            return None
        if isinstance(node, ast.Name):
            return env.get(node.id, self.globals.get(node.id))
        if isinstance(node, ast.Attribute):
            return self.attribute(node, self.expr(node.value, env))
        if isinstance(node, ast.Call):
            return self.call(node, env)
        if isinstance(node, ast.Subscript):
            holder = self.expr(node.value, env)
            self.expr(node.slice, env)
            if isinstance(holder, ContainerT):
                return holder.elem
            if isinstance(holder, InstT):
                entries = self.check_callable(node, holder.name + ".__getitem__", [])
                return self.from_text(entries[0].returns, holder.name) if entries else UNCHECKED
            if isinstance(holder, TupleT):
                if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int) and -len(holder.items) <= node.slice.value < len(holder.items):
                    return holder.items[node.slice.value]
                return UnknownT(f"an element of {describe(holder)}")
            if isinstance(holder, UnknownT):
                return UnknownT(f"an element of {holder.why}")
            return None
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.expr(e.value if isinstance(e, ast.Starred) else e, env) for e in node.elts]
            if isinstance(node, ast.Tuple) and not any(isinstance(e, ast.Starred) for e in node.elts) and any(map(is_api, items)):
                return TupleT(tuple(items))
            elem = None
            for item in items:
                elem = join(elem, item)
            return ContainerT(elem) if is_api(elem) else None
        if isinstance(node, ast.Dict):
            for k in node.keys:
                self.expr(k, env)
            elem = None
            for v in node.values:
                elem = join(elem, self.expr(v, env))
            return ContainerT(elem) if is_api(elem) else None
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            local = dict(env)
            for gen in node.generators:
                self.assign(gen.target, self.iterate(gen.iter, local), local, node)
                for cond in gen.ifs:
                    self.expr(cond, local)
            if isinstance(node, ast.DictComp):
                self.expr(node.key, local)
                elem = self.expr(node.value, local)
            else:
                elem = self.expr(node.elt, local)
            return ContainerT(elem) if is_api(elem) else None
        if isinstance(node, (ast.BoolOp,)):
            t = None
            for v in node.values:
                t = join(t, self.expr(v, env))
            return t
        if isinstance(node, ast.IfExp):
            self.expr(node.test, env)
            return join(self.expr(node.body, env), self.expr(node.orelse, env))
        if isinstance(node, ast.NamedExpr):
            t = self.expr(node.value, env)
            self.assign(node.target, t, env, node)
            return t
        if isinstance(node, ast.Lambda):
            local = dict(env)
            for arg in node.args.args:
                local[arg.arg] = None
            if is_api(self.expr(node.body, local)):
                self.error(node, "a lambda returning an API object is not tracked; use a def with a return annotation")
            return None
        if isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)):
            if is_api(self.expr(node.value, env)):
                self.error(node, "yielding/awaiting API objects is not tracked")
            return None
        # Constants, f-strings, comparisons, arithmetic: check what is inside; the result is plain data.
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child, env)
            elif isinstance(child, ast.comprehension):
                self.expr(child.iter, env)
        return None

    def attribute(self, node: ast.Attribute, holder):
        """The type of `holder.attr`, checking the name when holder is an API object."""
        if isinstance(holder, ContainerT):
            return None  # a dict/list method; calls are handled in call()
        if holder is UNCHECKED:
            return UNCHECKED
        if isinstance(holder, UnknownT):
            self.error(node, f"cannot check .{node.attr}: the object is {holder.why}; "
                             "annotate the variable with its API class (x: trt.Foo = ...)")
            return UNCHECKED
        if isinstance(holder, CallT):
            self.error(node, f"cannot check .{node.attr} on the method {holder.name}")
            return UNCHECKED
        if isinstance(holder, (ModuleT, ClassT, InstT)):
            return self.member(node, holder, node.attr)
        return None

    def annotation(self, node: ast.expr, env: dict):
        """The API type an annotation names (None for non-API annotations); checks the names in it."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                node = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            left, right = self.annotation(node.left, env), self.annotation(node.right, env)
            return left if is_api(left) else right
        if isinstance(node, ast.Subscript):
            base = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
            args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            inner = [self.annotation(a, env) for a in args]
            if base == "Optional":
                return inner[0]
            if base in ("dict", "Dict", "Mapping"):
                return ContainerT(inner[-1]) if is_api(inner[-1]) else None
            if base in ("list", "List", "Sequence", "Iterable", "set", "tuple"):
                return ContainerT(inner[0]) if is_api(inner[0]) else None
            return None
        if isinstance(node, (ast.Attribute, ast.Name)):
            t = self.expr(node, env)
            if isinstance(t, ClassT):
                return InstT(t.name)
            if is_api(t):
                self.error(node, f"annotation {ast.unparse(node)} is not an API class")
        return None

    def compatible(self, declared, actual) -> bool:
        if isinstance(actual, UnknownT):
            return True
        if isinstance(declared, ContainerT) and isinstance(actual, ContainerT):
            return self.compatible(declared.elem, actual.elem)
        return declared == actual

    # -- names
    def lookup(self, node: ast.AST, holder, attr: str) -> list[Entry]:
        api = self.api_for(holder.name)
        full = f"{holder.name}.{attr}"
        entries = api.get(full)
        if not entries:
            what = "module" if isinstance(holder, ModuleT) else "class"
            self.error(node, f"{full} does not exist ({what} {holder.name} has no {attr!r})")
        else:
            self.used.add(full)
            if isinstance(node, ast.Attribute) and node.attr == attr:
                self.sites.add((node.end_lineno, node.end_col_offset, attr))
        return entries

    def member(self, node: ast.AST, holder, attr: str, entries: Optional[list[Entry]] = None):
        entries = self.lookup(node, holder, attr) if entries is None else entries
        if not entries:
            return UNCHECKED
        e = entries[0]
        api = self.api_for(holder.name)
        if e.kind == "module":
            return ModuleT(e.name)
        if e.kind == "class":
            return ClassT(api.canonical(e.name))
        if e.kind == "value":
            return InstT(api.canonical(e.returns))
        if e.kind in ("method", "function"):
            return CallT(e.name, bound=isinstance(holder, InstT) or e.kind == "function")
        if e.kind in ("property", "setproperty", "attribute"):
            if isinstance(holder, ClassT) and e.kind != "attribute":
                return UnknownT(f"the property object {e.name}")
            return self.from_text(e.returns, holder.name)
        return UnknownT(f"{e.name} ({e.kind})")

    def from_text(self, text: str, context: str):
        """The type a fixture's return/property text stands for."""
        api = self.api_for(context)
        if text in ("?", "") or "::" in text:
            return UnknownT(f"the result of an API call whose type the fixture does not know ({text})")
        refs = [r for r in re.findall(r"\b[a-z]\w*(?:\.\w+)+", text) if r in api.classes]
        if not refs:
            return None
        if len(set(refs)) == 1:
            ref = api.canonical(refs[0])
            bare = text.replace("typing.", "")
            if bare in (refs[0], f"Optional[{refs[0]}]", f"{refs[0]} | None"):
                return InstT(ref)
            if bare in (f"list[{refs[0]}]", f"List[{refs[0]}]"):
                return ContainerT(InstT(ref))
        return UnknownT(f"a composite API value ({text})")

    # -- calls
    def call(self, node: ast.Call, env: dict):
        func = node.func
        args = [self.expr(a.value if isinstance(a, ast.Starred) else a, env) for a in node.args]
        kwargs = {k.arg: self.expr(k.value, env) for k in node.keywords}
        for a, t in zip(node.args, args):
            if isinstance(a, ast.Starred) and is_api(t):
                self.error(a, "passing API objects through *args is not tracked")
        # Version-dependent feature detection: getattr(obj, "NAME", default) / hasattr(obj, "NAME").
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and func.id not in env and len(node.args) >= 2:
            holder = args[0]
            if isinstance(holder, (ModuleT, ClassT, InstT)):
                name = node.args[1]
                if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                    self.error(node, f"{func.id}() on {holder.name} with a computed name cannot be checked; use a literal")
                    return UNCHECKED
                optional = func.id == "hasattr" or len(node.args) == 3
                if not optional:
                    return self.member(node, holder, name.value)
                full = f"{holder.name}.{name.value}"
                entries = self.api_for(holder.name).get(full)
                self.optional[full] = self.optional.get(full, False) or bool(entries)
                if func.id == "hasattr":
                    return None
                return self.member(node, holder, name.value, entries) if entries else args[2]
            if isinstance(holder, UnknownT) and holder is not UNCHECKED:
                self.error(node, f"{func.id}() on {holder.why} cannot be checked")
            return None
        if isinstance(func, ast.Attribute):
            holder = self.expr(func.value, env)
            if isinstance(holder, ContainerT) or (holder is None and func.attr in ("append", "add") and args
                                                  and is_api(args[0]) and isinstance(func.value, ast.Name)):
                if func.attr in ("append", "add") and args and isinstance(func.value, ast.Name):
                    env[func.value.id] = join(env.get(func.value.id), ContainerT(args[0]))
                    return None
                kind = BUILTIN_ITER.get(func.attr) if isinstance(holder, ContainerT) else None
                if kind == "elem":
                    return holder.elem
                if kind == "items":
                    return ContainerT(TupleT((None, holder.elem)))
                return None
            if holder is None and func.attr in self.methods:
                return self.check_locals(node, self.methods[func.attr], args, kwargs, skip_self=True)
        if isinstance(func, ast.Attribute):
            target = self.attribute(func, holder)
        else:
            target = self.expr(func, env) if not isinstance(func, ast.Name) or func.id in env or func.id in self.globals else None
        if isinstance(func, ast.Name) and func.id in self.classes and func.id not in env and func.id not in self.globals:
            inits = self.classes[func.id]
            if inits:
                self.check_locals(node, inits, args, kwargs, skip_self=True)
            elif any(map(is_api, args + list(kwargs.values()))):
                self.error(node, f"{func.id}() gets an API object but has no __init__ the checker can see")
            return None
        if isinstance(func, ast.Name) and func.id in self.functions and func.id not in env and func.id not in self.globals:
            return self.check_locals(node, self.functions[func.id], args, kwargs, skip_self=False)
        if isinstance(target, ClassT):
            self.check_callable(node, target.name + ".__init__", args, kwargs, what=f"{target.name}()")
            return InstT(target.name)
        if isinstance(target, CallT):
            entries = self.check_callable(node, target.name, args, kwargs, bound=target.bound)
            if not entries:
                return UNCHECKED
            returns = {e.returns for e in entries}
            if len(returns) == 1:
                return self.from_text(returns.pop(), target.name)
            return UnknownT(f"the result of {target.name} (overloads return {', '.join(sorted(returns))})")
        if target is UNCHECKED:
            return UNCHECKED
        if isinstance(target, UnknownT):
            self.error(node, f"cannot check this call: the callee is {target.why}")
            return UNCHECKED
        if isinstance(target, (InstT, ModuleT)):
            self.error(node, f"{target.name} is not callable")
            return UNCHECKED
        return None

    def check_callable(self, node: ast.AST, full: str, args: list, kwargs: Optional[dict] = None, *,
                       bound: bool = True, what: Optional[str] = None) -> list[Entry]:
        api = self.api_for(full)
        entries = [e for e in api.get(full) if e.kind in ("method", "function")]
        owner, _, name = full.rpartition(".")
        if not entries:
            if name == "__init__":
                self.error(node, f"{what or owner} cannot be constructed: {owner} has no constructor")
            else:
                self.error(node, f"{full} does not exist")
            return []
        self.used.add(full)
        kwargs = kwargs or {}
        if None in kwargs:  # **mapping: names unknown
            self.error(node, f"{full}(**...) cannot be checked; pass keywords explicitly")
            return entries
        npos = len(args) - (0 if bound or entries[0].kind == "function" else 1)
        ok = [e for e in entries if self.accepts(e, npos, set(kwargs))]
        if not ok:
            sigs = "; ".join(f"({', '.join(e.params)})" if e.params is not None else "(positional only)" for e in entries)
            self.error(node, f"{full} does not accept {npos} positional argument(s) and keywords "
                             f"{sorted(kwargs) or 'none'}; its signature: {sigs}")
            return entries
        return ok

    @staticmethod
    def accepts(e: Entry, npos: int, keywords: set[str]) -> bool:
        if e.params is None:
            return not keywords
        names = [p.rstrip("=") for p in e.params if not p.startswith("*")]
        varargs = any(p.startswith("*") and not p.startswith("**") for p in e.params)
        varkw = any(p.startswith("**") for p in e.params)
        if npos > len(names) and not varargs:
            return False
        if not varkw and not keywords <= set(names):
            return False
        if keywords & set(names[:npos]):
            return False
        required = [p.rstrip("=") for p in e.params if not p.endswith("=") and not p.startswith("*")]
        return all(r in names[:npos] or r in keywords for r in required)

    def check_locals(self, node: ast.Call, infos: list[FunctionInfo], args: list, kwargs: dict, skip_self: bool):
        """Check a call against every local def of that name; the result is their joined return type."""
        returns = None
        for info in infos:
            self.check_local(node, info, args, kwargs, skip_self)
            returns = join(returns, info.returns)
        return returns

    def check_local(self, node: ast.Call, info: FunctionInfo, args: list, kwargs: dict, skip_self: bool) -> None:
        params = info.params[1:] if skip_self or info.method else info.params
        for i, t in enumerate(args):
            if is_api(t):
                self.check_param(node, info, params[i] if i < len(params) else None, t)
        for k, t in kwargs.items():
            if is_api(t):
                self.check_param(node, info, k, t)

    def check_param(self, node: ast.AST, info: FunctionInfo, param: Optional[str], t) -> None:
        name = info.node.name
        if param is None or param not in info.params:
            self.error(node, f"{name}() gets {describe(t)} through a parameter the checker cannot see")
            return
        declared = info.annotations.get(param)
        if not is_api(declared):
            self.error(node, f"{name}({param}) gets {describe(t)}; annotate the parameter (e.g. {param}: trt.Foo) so its uses are checked")
        elif not self.compatible(declared, t):
            self.error(node, f"{name}({param}) is annotated {describe(declared)} but gets {describe(t)}")


# -- running it over every pinned version ------------------------------------------

@dataclass
class Report:
    errors: list[str]
    used: set[str]
    sites: set[tuple[int, int, str]]
    optional: dict[str, bool]
    versions: list[str]

    def __bool__(self) -> bool:
        return not self.errors


def check_source(source: str, filename: str, apis: Optional[dict[str, list[Api]]] = None) -> Report:
    """Check one file against every combination of pinned versions (one per module)."""
    apis = load_apis() if apis is None else apis
    if not apis:
        raise FileNotFoundError(f"no API fixtures in {FIXTURES}; run tools/extract_api_names.py")
    modules = sorted(apis)
    by_error: dict[tuple[int, str], list[str]] = {}
    used: set[str] = set()
    sites: set[tuple[int, int, str]] = set()
    optional: dict[str, bool] = {}
    versions = []
    for combo in itertools.product(*(apis[m] for m in modules)):
        chosen = {a.module: a for a in combo}
        checker = Checker(source, filename, chosen).run()
        versions.append(" + ".join(a.label for a in combo))
        for key in checker.errors:
            by_error.setdefault(key, []).append(versions[-1])
        used |= checker.used
        sites |= checker.sites
        for name, found in checker.optional.items():
            optional[name] = optional.get(name, False) or found
    everywhere = len(versions)
    errors = [f"{filename}:{line}: {message} [{'all pinned versions' if len(set(vs)) == everywhere else 'in ' + '; '.join(sorted(set(vs)))}]"
              for (line, message), vs in sorted(by_error.items())]
    errors += [f"{filename}: {name} (looked up with getattr/hasattr) exists in no pinned version; misspelled?"
               for name, found in sorted(optional.items()) if not found]
    return Report(errors, used, sites, optional, versions)


def main(argv: Optional[Iterable[str]] = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print(__doc__.split("\n\n")[1])
        return 2
    status = 0
    for path in paths:
        report = check_source(Path(path).read_text(encoding="utf-8"), path)
        for line in report.errors:
            print(line)
        print(f"{path}: {len(report.used)} API names checked against {len(report.versions)} version set(s); "
              f"{len(report.errors)} problem(s)")
        status |= bool(report.errors)
    return status


if __name__ == "__main__":
    sys.exit(main())
