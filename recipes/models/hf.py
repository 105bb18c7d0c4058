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


def load_classifier(model_dir: Path, attention: str = "sdpa", **config_overrides: Any):
    """A *ForSequenceClassification model in eval mode, read from safetensors only."""
    quiet_transformers()
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from recipes.models.slim import HEADS_KEY, build_model

    raw = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    if raw.get(HEADS_KEY) and not config_overrides:
        # Head-pruned: build the smaller layers first, then load strictly.
        from safetensors.torch import load_file

        model = build_model(AutoConfig.from_pretrained(str(model_dir), local_files_only=True), attention)
        model.load_state_dict(load_file(str(Path(model_dir) / "model.safetensors")), strict=True)
        return model.eval()
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir),
        local_files_only=True,
        use_safetensors=True,
        attn_implementation=attention,
        **config_overrides,
    )
    return model.eval()


def set_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
