"""Tiny random BERT checkpoints and datasets for tests, built in seconds.

The tokenizer is a real WordPiece trained on the texts with `tokenizers`, so
the tiny model sees meaningful ids and learns something in a few steps.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_CSV = REPO / "data" / "demo_sentiment.csv"


def demo_rows(per_label: int = 40) -> list[dict[str, str]]:
    with open(DEMO_CSV, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for label in ("negative", "positive"):
        out += [r for r in rows if r["label"] == label][:per_label]
    return out


def write_csv(path: Path, rows: list[dict[str, str]], columns=("id", "text", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def train_tokenizer(texts: list[str], directory: Path, vocab_size: int = 400) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tokenizer.json"
    tok.save(str(path))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizerFast", "do_lower_case": True, "pad_token": "[PAD]"}, indent=2) + "\n")
    return path


def make_checkpoint(directory: Path, texts: list[str], *, seed: int = 0, with_head: bool = False,
                    labels: tuple[str, ...] = ("negative", "positive"), model_type: str = "bert", layers: int = 2) -> Path:
    """A 2-layer (or `layers`), 32-wide random encoder (no classification head unless asked)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    directory = Path(directory)
    tok_path = train_tokenizer(texts, directory)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tok_path)).get_vocab_size()
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(seed)
    if with_head:
        config.id2label = dict(enumerate(labels))
        config.label2id = {l: i for i, l in enumerate(labels)}
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config)
    model.save_pretrained(directory, safe_serialization=True)
    if model_type != "bert":
        cfg = json.loads((directory / "config.json").read_text())
        cfg["model_type"] = model_type
        (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    return directory


def make_sentence_transformers(directory: Path, texts: list[str], *, pooling: str = "mean", normalize: bool = True,
                               seed: int = 0, layers: int = 2) -> Path:
    """The tiny random encoder saved as a sentence-transformers model: modules.json (Transformer -> Pooling
    [-> Normalize]), 1_Pooling/config.json and sentence_bert_config.json, as SentenceTransformer.save() writes."""
    directory = make_checkpoint(directory, texts, seed=seed, layers=layers)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (directory / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2) + "\n")
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}) + "\n")
    return directory


def write_texts(path: Path, texts: list[str]) -> Path:
    """Unlabelled data for an embedding build: one JSON object with a text per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path
