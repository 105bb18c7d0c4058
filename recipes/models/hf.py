"""Loading checkpoints with transformers, quietly and without pickle."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def quiet_transformers() -> None:
    import logging

    # transformers imports torchao when it is installed (we use it for .pte
    # export); torchao then warns about CUDA kernels this CPU host cannot load
    # and torch warns about its enum registration. Neither concerns the user.
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def verify_model_dir(model_dir: Path) -> None:
    """A checkpoint this build wrote carries manifest.json (sha256 of every file): check it before loading."""
    from recipes.errors import ModelError
    from runtime.integrity import sha256_file

    manifest = Path(model_dir) / "manifest.json"
    if not manifest.is_file():
        return  # the user's own checkpoint: SCons tracks its contents
    for entry in json.loads(manifest.read_text(encoding="utf-8"))["files"]:
        path = Path(model_dir) / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise ModelError(f"{path}: does not match {manifest} (sha256 or size differs, or it is missing); the "
                             "checkpoint was changed after it was built; delete its directory and run scons again")


def check_vocabulary(model_dir: Path, vocab_size: int) -> None:
    """Every id the tokenizer can produce must index the embedding table (else an IndexError, or worse, at run time)."""
    from recipes.errors import ModelError

    tokenizer = Path(model_dir) / "tokenizer.json"
    if not tokenizer.is_file():
        return
    spec = json.loads(tokenizer.read_text(encoding="utf-8"))
    vocab = (spec.get("model") or {}).get("vocab") or {}
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))
    ids += [t.get("id", -1) for t in spec.get("added_tokens") or []]
    top = max((i for i in ids if isinstance(i, int)), default=-1)
    if top >= vocab_size:
        raise ModelError(f"{Path(model_dir) / 'config.json'}: vocab_size = {vocab_size}, but {tokenizer} produces ids up to "
                         f"{top}; the config and the tokenizer belong to different models")


def check_loading(model_dir: Path, info: dict[str, Any], head_prefixes: tuple[str, ...], body_roots: set[str],
                  new_head: bool) -> None:
    """Every tensor of the model comes from the checkpoint with the shape the config declares.

    Only the classification head may be newly initialised, and only when the
    checkpoint has none (`new_head`, fine-tuning). transformers would instead
    re-initialise whatever does not fit and carry on; that ships random weights.
    """
    from recipes.errors import ModelError

    where = Path(model_dir) / "model.safetensors"
    fix = f"{Path(model_dir) / 'config.json'} does not describe these weights; use the config saved with them"
    for key, in_file, in_model in info.get("mismatched_keys") or []:
        raise ModelError(f"{where}: tensor {key} has shape {list(in_file)} but the config needs {list(in_model)}; {fix}")
    missing = sorted(k for k in info.get("missing_keys") or [] if not (new_head and k.startswith(head_prefixes)))
    if missing:
        raise ModelError(f"{where}: no tensor {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                         + f" for the model the config describes; {fix}")
    # Tensors of the model body that nothing loads mean the config describes a smaller model
    # (fewer layers); other leftovers (a pretraining head such as cls.*) are dropped as transformers does.
    # A base checkpoint names its tensors without the prefix (encoder.layer.1...), a task one with it (bert.encoder...).
    body = sorted(k for k in info.get("unexpected_keys") or [] if k.split(".")[0] in body_roots)
    if body:
        raise ModelError(f"{where}: tensor {body[0]}" + (f" (and {len(body) - 1} more)" if len(body) > 1 else "")
                         + f" is not part of the model the config describes; {fix}")


def load_classifier(model_dir: Path, attention: str = "sdpa", new_head: bool = False, **config_overrides: Any):
    """A *ForSequenceClassification model in eval mode, read from safetensors only, every tensor checked.

    `new_head`: the checkpoint has no classification head and one is created (fine-tuning)."""
    quiet_transformers()
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from recipes.models.archs import arch_for
    from recipes.models.slim import HEADS_KEY, build_model

    from recipes.models.embedding import read_pooling

    verify_model_dir(model_dir)
    raw = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    check_vocabulary(model_dir, int(raw.get("vocab_size", 0)))
    pooling = read_pooling(model_dir)
    if pooling is not None:  # a sentence-embedding model (recipes/models/embedding.py): encoder + pooling
        return load_embedding(model_dir, pooling, attention)
    if raw.get(HEADS_KEY) and not config_overrides:
        # Head-pruned: build the smaller layers first, then load strictly.
        from safetensors.torch import load_file

        model = build_model(AutoConfig.from_pretrained(str(model_dir), local_files_only=True), attention)
        model.load_state_dict(load_file(str(Path(model_dir) / "model.safetensors")), strict=True)
        return model.eval()
    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir),
        local_files_only=True,
        use_safetensors=True,
        attn_implementation=attention,
        # Report mis-shaped tensors instead of raising mid-load; check_loading turns them into one line.
        ignore_mismatched_sizes=True,
        output_loading_info=True,
        **config_overrides,
    )
    arch = arch_for(model.config.model_type, str(Path(model_dir) / "config.json"))
    body_roots = {model.base_model_prefix} | {name for name, _ in model.base_model.named_children()}
    check_loading(model_dir, info, arch.head_prefixes, body_roots, new_head)
    return model.eval()


def load_embedding(model_dir: Path, pooling, attention: str = "sdpa"):
    """The encoder of `model_dir` with `pooling` (an embedding.PoolingSpec) after it, every tensor checked.

    The checkpoint may name its tensors with or without the task prefix (bert.encoder... or encoder...). A
    pooler layer the checkpoint lacks is dropped, not initialised: the sentence vector never reads it."""
    quiet_transformers()
    from transformers import AutoModel

    from recipes.models.embedding import make_embedding_model

    verify_model_dir(model_dir)
    encoder, info = AutoModel.from_pretrained(
        str(model_dir), local_files_only=True, use_safetensors=True, attn_implementation=attention,
        ignore_mismatched_sizes=True, output_loading_info=True)
    pooler_missing = any(k.startswith("pooler.") for k in info.get("missing_keys") or [])
    info = dict(info, missing_keys=[k for k in info.get("missing_keys") or [] if not k.startswith("pooler.")])
    body_roots = {encoder.base_model_prefix} | {name for name, _ in encoder.named_children()}
    check_loading(model_dir, info, (), body_roots, False)
    if pooler_missing and getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return make_embedding_model(encoder, pooling).eval()


def set_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
