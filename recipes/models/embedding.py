"""Sentence embeddings: the pooling a sentence-transformers checkpoint declares, as part of the model.

A sentence-transformers directory (modules.json: Transformer -> Pooling [-> Normalize]) is an encoder whose
output is one vector per text. edgesmith builds it as an `EmbeddingModel`: the encoder, the pooling and the
normalisation in one nn.Module, so the pooling is inside every exported graph (ONNX, .ptl, .pte, TensorRT)
and every runtime returns the same vector. Its forward returns the vector as `.logits`, the one output every
converter and runner of this build already reads; the ONNX output is named "sentence_embedding".

The pooling comes from the checkpoint's own files, never from a guess; a module or mode that is not
supported is one line naming the file, the key and what is supported. A build-made model directory carries
it as pooling.json (written by `save_pretrained`), which recipes/models/hf.py's loader recognises.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recipes.errors import ModelError

POOLING_FILE = "pooling.json"  # in a model directory the build wrote: what makes it an embedding model
OUTPUT_NAME = "sentence_embedding"  # sentence-transformers' own name; "embedding" is taken by the lookup op
MODES = ("mean", "cls", "max")
TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"
# sentence-transformers' pooling_mode_* keys we implement, and those we refuse by name.
ST_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
ST_UNSUPPORTED = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


@dataclass(frozen=True)
class PoolingSpec:
    mode: str            # mean | cls | max, over the tokens the attention mask keeps
    normalize: bool      # L2-normalise the pooled vector (a Normalize module follows the pooling)
    dimension: int       # the encoder's hidden size, which the pooled vector keeps
    max_seq_length: int  # sentence-transformers' truncation length (0: not stated)


def is_sentence_transformers(model_dir: Path) -> bool:
    return (Path(model_dir) / "modules.json").is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; a sentence-transformers checkpoint needs it (save the model with "
                         "SentenceTransformer.save())") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: invalid JSON ({e})") from None


def read_sentence_transformers(model_dir: Path, hidden_size: int) -> PoolingSpec:
    """The pooling of a sentence-transformers directory, checked against what edgesmith can build."""
    root = Path(model_dir)
    modules_path = root / "modules.json"
    modules = _read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str) for m in modules):
        raise ModelError(f"{modules_path}: expected a list of {{\"type\": ..., \"path\": ...}} objects")
    types = [m["type"] for m in modules]
    for i, kind in enumerate(types):
        allowed = {0: (TRANSFORMER,), 1: (POOLING,), 2: (NORMALIZE,)}.get(i, ())
        if kind not in allowed:
            raise ModelError(f"{modules_path}: module {i} is {kind}; edgesmith builds {TRANSFORMER} -> {POOLING} "
                             f"[-> {NORMALIZE}] only (no Dense or other layers after the pooling)")
    if len(types) < 2:
        raise ModelError(f"{modules_path}: no {POOLING} module after the Transformer; edgesmith needs the pooling "
                         "to build a sentence embedding")
    pooling_path = root / (modules[1].get("path") or "1_Pooling") / "config.json"
    config = _read_json(pooling_path)
    for key in ST_UNSUPPORTED:
        if config.get(key):
            raise ModelError(f"{pooling_path}: {key} = true is not supported; edgesmith pools with "
                             f"{', '.join(ST_MODES)} (one of them)")
    on = [mode for key, mode in ST_MODES.items() if config.get(key)]
    if len(on) != 1:
        raise ModelError(f"{pooling_path}: {'no' if not on else 'more than one'} pooling mode is set "
                         f"({', '.join(on) or 'none'}); set exactly one of {', '.join(ST_MODES)} to true")
    dim = config.get("word_embedding_dimension")
    if dim != hidden_size:
        raise ModelError(f"{pooling_path}: word_embedding_dimension = {dim}, but the encoder's hidden_size is "
                         f"{hidden_size} ({root / 'config.json'}); the pooling config belongs to another model")
    st_config = root / "sentence_bert_config.json"
    max_seq = int(_read_json(st_config).get("max_seq_length") or 0) if st_config.is_file() else 0
    return PoolingSpec(mode=on[0], normalize=len(types) == 3, dimension=int(hidden_size), max_seq_length=max_seq)


def read_pooling(model_dir: Path) -> PoolingSpec | None:
    """The PoolingSpec of a build-made model directory (pooling.json), or None for a classifier."""
    path = Path(model_dir) / POOLING_FILE
    if not path.is_file():
        return None
    raw = _read_json(path)
    try:
        spec = PoolingSpec(**raw)
    except TypeError as e:
        raise ModelError(f"{path}: not an edgesmith pooling record ({e}); delete the model directory and rebuild") from None
    if spec.mode not in MODES:
        raise ModelError(f"{path}: mode = {spec.mode!r}; expected one of {', '.join(MODES)}")
    return spec


def make_embedding_model(encoder: Any, spec: PoolingSpec):
    """`encoder` (a transformers base model) with `spec`'s pooling and normalisation after it."""
    import torch
    from transformers.utils import ModelOutput

    @dataclass
    class EmbeddingOutput(ModelOutput):
        # Named logits so every converter and runner reads it as the classifier's output; the vector, [batch, dim].
        logits: torch.Tensor | None = None

    class EmbeddingModel(torch.nn.Module):
        output_name = OUTPUT_NAME

        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.config = encoder.config
            self.pooling = spec

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if spec.mode == "cls":
                pooled = hidden[:, 0]
            elif spec.mode == "max":
                # As sentence-transformers: padded positions cannot win the max.
                pooled = torch.where(mask > 0, hidden, torch.full_like(hidden, -1e9)).max(dim=1).values
            else:
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if spec.normalize:
                # F.normalize's arithmetic (eps 1e-12), spelled with Mul/ReduceSum/Sqrt and a broadcasting Div:
                # its expand_as (an ONNX Expand) and ReduceL2 stop ONNX Runtime's symbolic shape inference,
                # which the MAC count (recipes/measure/ops.py) and ORT's fusion rely on.
                norm = torch.sqrt((pooled * pooled).sum(dim=1, keepdim=True))
                pooled = pooled / norm.clamp(min=1e-12)
            return EmbeddingOutput(logits=pooled)

        def save_pretrained(self, dst, **kwargs):
            self.encoder.save_pretrained(dst, **kwargs)
            (Path(dst) / POOLING_FILE).write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n",
                                                  encoding="utf-8")

    return EmbeddingModel()
