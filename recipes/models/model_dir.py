"""Write a trained or derived PyTorch model as a checkpoint directory.

Fine-tuning, distillation and pruning all end the same way: safetensors weights
and config, the tokenizer files of the checkpoint the model came from, the
stage's own record, and a manifest of every file, all appearing at once (an
interrupted stage leaves nothing behind).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from recipes.inputs.checkpoint import TOKENIZER_FILES
from recipes.fsutil import atomic_dir, dir_manifest


def write_model_dir(model: Any, tokenizer_dir: Path, dst: Path, record_name: str, record: dict[str, Any]) -> None:
    """Save `model` (a transformers PreTrainedModel) to `dst`, with `record` as `record_name`."""
    with atomic_dir(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, tmp / name)
        (tmp / record_name).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        (tmp / "manifest.json").write_text(json.dumps({"files": dir_manifest(tmp)}, indent=2, sort_keys=True) + "\n")
