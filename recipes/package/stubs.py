"""Render runtime stubs and bundle READMEs from templates/ with Jinja.

One environment for everything: StrictUndefined (a missing value is an
error, not an empty string), trailing newlines kept, and values entering
generated code only through the `py`/`json` filters, never pasted raw.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from recipes.fsutil import atomic_path
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Built, Graph, Model

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True)
class StubParams:
    # Template names under templates/, without ".jinja"; output is the base
    # name (Java sources go to java/<package path>/).
    templates: tuple[str, ...] = ()
    java_package: str = "ai.edgesmith.bundle"


def _defined(value: Any) -> Any:
    """Make StrictUndefined raise its UndefinedError rather than a TypeError."""
    import jinja2

    if isinstance(value, jinja2.Undefined):
        str(value)
    return value


def to_json(value: Any) -> str:
    return json.dumps(_defined(value), ensure_ascii=False, sort_keys=True)


def to_python(value: Any) -> str:
    """A Python literal for JSON-like data (True/False/None spelled for Python)."""
    return repr(json.loads(json.dumps(_defined(value))))


def environment(root: Path = TEMPLATES):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["json"] = to_json
    env.filters["py"] = to_python
    return env


def render(template: str, context: dict[str, Any], root: Path = TEMPLATES) -> str:
    """Render templates/<template>.jinja."""
    return environment(root).get_template(f"{template}.jinja").render(**context)


def render_to(template: str, context: dict[str, Any], dst: Path, root: Path = TEMPLATES) -> None:
    text = render(template, context, root)
    with atomic_path(dst) as tmp:
        tmp.write_text(text, encoding="utf-8")
        if text.startswith("#!"):
            tmp.chmod(0o755)


def stub_context(context: dict[str, Any], data_json: str) -> dict[str, Any]:
    """The graph's values plus the labels and the task (an embedding build's data has no labels), read from the
    data stage's output."""
    data = json.loads(Path(data_json).read_text(encoding="utf-8"))
    return {**context, "labels": data["labels"], "task": data.get("task", "classification")}


@dataclass(frozen=True)
class StubArgs:
    templates: tuple[str, ...]
    outputs: tuple[Path, ...]
    context: dict                  # the values baked into the stubs
    data_json: Path                # the labels come from the data stage
    # Java stubs: their pure-Java WordPiece reads the tokenizer's settings and a plain vocabulary.
    tokenizer_json: Optional[Path] = None
    vocab_txt: Optional[Path] = None
    # With a [budget], the default artifact is the select stage's winner (recipes/measure/budget.py).
    selection: Optional[Path] = None


def build(args: StubArgs) -> None:
    ctx = stub_context(args.context, str(args.data_json))
    if args.selection is not None:
        ctx["default_artifact"] = json.loads(args.selection.read_text(encoding="utf-8"))["winner"]
    if args.tokenizer_json:
        from recipes.package.wordpiece import wordpiece_spec, write_vocab_txt

        ctx["wordpiece"] = wordpiece_spec(args.tokenizer_json)
        if args.vocab_txt:
            write_vocab_txt(args.tokenizer_json, args.vocab_txt)
    for template, out in zip(args.templates, args.outputs):
        render_to(template, ctx, out)


STAGE = Stage("stub", StubArgs, build, modules=("package.stubs", "package.wordpiece"), packages=("jinja2",))


def output_path(stub_dir: Path, template: str, java_package: str) -> Path:
    name = Path(template).name
    if name.endswith(".java"):
        return stub_dir / "java" / Path(*java_package.split(".")) / name
    return stub_dir / name


def declare(g: "Graph", shipped: list["Built"], default: str, manifest_artifacts: list[dict],
            stub_dir: Path, runtime_version: str, selection: Path | None = None) -> list[Path]:
    """Render the profile's stub templates; returns the generated files (for the bundle)."""
    from recipes.errors import ConfigError, ProfileError
    from recipes.package.wordpiece import java_package

    p = g.profile
    outputs = [output_path(stub_dir, t, p.stubs.java_package) for t in p.stubs.templates]
    if not outputs:
        return []
    # Java sources tokenize on the device with a pure-Java WordPiece, which reads the vocabulary as plain lines.
    java = any(o.suffix == ".java" for o in outputs)
    vocab = stub_dir / "tokenizer" / "vocab.txt" if java else None
    shapes = {"batch": vars(p.shapes.batch), "sequence": vars(p.shapes.sequence)}
    context = {"target": p.name, "description": p.device.description, "default_artifact": default,
               "artifacts": manifest_artifacts, "fallback": list(p.bundle.fallback), "max_length": p.shapes.sequence.max, "runtime_version": runtime_version,
               "shapes": shapes, "input_names": list(g.input_names), "min_length": p.shapes.sequence.min,
               "engine": vars(p.engine), "trt_workspace_mb": p.engine.workspace_mb,
               "engines": [b.engine for b in shipped if b.engine]}
    if java:
        try:
            package = java_package(p.stubs.java_package)
        except ConfigError as e:
            raise ProfileError(f"{p.source}: stubs.{e}") from None
        context.update(java_package=package, executorch_version=g.package_version("executorch"))
    # Only Java stubs read the tokenizer (the input checkpoint's; the teacher's is a copy of it),
    # so new weights, or another checkpoint with the same labels, do not regenerate Python stubs.
    tokenizer = g.info.root / "tokenizer.json" if java else None
    args = StubArgs(templates=p.stubs.templates, outputs=tuple(outputs), context=context,
                    data_json=g.data_dir / "data.json", tokenizer_json=tokenizer, vocab_txt=vocab, selection=selection)
    g.stage(STAGE, outputs + ([vocab] if vocab else []),
            [g.data_dir / "data.json"] + ([tokenizer] if tokenizer else []) + ([selection] if selection else [])
            + [g.templates / f"{t}.jinja" for t in p.stubs.templates], args)
    return outputs + ([vocab] if vocab else [])
