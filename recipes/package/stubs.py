"""Render runtime stubs and bundle READMEs from templates/ with Jinja.

One environment for everything: StrictUndefined (a missing value is an
error, not an empty string), trailing newlines kept, and values entering
generated code only through the `py`/`json` filters, never pasted raw.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recipes.fsutil import atomic_path

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


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
    """The graph's values plus the labels, read from the data stage's output."""
    labels = json.loads(Path(data_json).read_text(encoding="utf-8"))["labels"]
    return {**context, "labels": labels}


def stub_stage(templates: list[str], outputs: list[str], context: dict, data_json: str,
               tokenizer_json: str | None = None, vocab_txt: str | None = None) -> None:
    ctx = stub_context(context, data_json)
    if tokenizer_json:
        # The Android stub's pure-Java WordPiece needs the tokenizer's settings and vocabulary.
        from recipes.package.wordpiece import wordpiece_spec, write_vocab_txt

        ctx["wordpiece"] = wordpiece_spec(Path(tokenizer_json))
        if vocab_txt:
            write_vocab_txt(Path(tokenizer_json), Path(vocab_txt))
    for template, out in zip(templates, outputs):
        render_to(template, ctx, Path(out))
