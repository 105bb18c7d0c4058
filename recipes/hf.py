"""Loading checkpoints with transformers, quietly and without pickle."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def load_classifier(model_dir: Path, attention: str = "sdpa", **config_overrides: Any):
    """A *ForSequenceClassification model in eval mode, read from safetensors only."""
    quiet_transformers()
    from transformers import AutoModelForSequenceClassification

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
