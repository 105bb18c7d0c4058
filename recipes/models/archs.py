"""What we know about each architecture, keyed by config.model_type.

Mostly data: the ONNX input names, where the encoder layers, attention and
FFN modules live (for distillation and pruning), and the attribute that holds
the classification head. An unknown model_type is a clear error.
"""
from __future__ import annotations

from dataclasses import dataclass

from recipes.errors import ModelError


@dataclass(frozen=True)
class Arch:
    model_type: str
    input_names: tuple[str, ...]
    # Dotted path from the *ForSequenceClassification model to the layer list.
    layers: str
    # Within one layer: the attention output projection and the FFN modules.
    attention: str
    ffn_in: str
    ffn_out: str
    # Weight-name prefix of a trained sequence-classification head.
    head_prefixes: tuple[str, ...]
    # Config key holding the number of layers (students change it).
    layer_count_key: str = "num_hidden_layers"
    # Within one layer: the self-attention module (its q/k/v projections) and
    # the attention output projection; empty where head pruning is unsupported.
    attention_self: str = "attention.self"
    qkv: tuple[str, ...] = ("query", "key", "value")
    attention_out: str = "attention.output.dense"


_BERT_LIKE = dict(
    attention="attention",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
)

ARCHS: dict[str, Arch] = {
    "bert": Arch("bert", ("input_ids", "attention_mask", "token_type_ids"), "bert.encoder.layer",
                 head_prefixes=("classifier.",), **_BERT_LIKE),
    "roberta": Arch("roberta", ("input_ids", "attention_mask"), "roberta.encoder.layer",
                    head_prefixes=("classifier.",), **_BERT_LIKE),
    "electra": Arch("electra", ("input_ids", "attention_mask", "token_type_ids"), "electra.encoder.layer",
                    head_prefixes=("classifier.",), **_BERT_LIKE),
    "distilbert": Arch("distilbert", ("input_ids", "attention_mask"), "distilbert.transformer.layer",
                       attention="attention", ffn_in="ffn.lin1", ffn_out="ffn.lin2",
                       head_prefixes=("classifier.", "pre_classifier."), layer_count_key="n_layers",
                       attention_self="", qkv=(), attention_out=""),
}
# MiniLM checkpoints (all-MiniLM-L6-v2, microsoft/MiniLM-*) declare model_type "bert".


def arch_for(model_type: str, where: str = "config.json") -> Arch:
    try:
        return ARCHS[model_type]
    except KeyError:
        raise ModelError(
            f"{where}: model_type {model_type!r} is not supported; edgesmith knows "
            f"{', '.join(sorted(ARCHS))} (MiniLM checkpoints use 'bert')"
        ) from None
