"""Android stub: the WordPiece spec, rendered Java and README (golden), javac against
compile-only shims of the Android runtimes, and the Java tokenizer's ids against the bundle
runtime's TextEncoder on the JVM.

`python tests/test_android_stub.py` prints templates/android/BertUnicodeTables.java.jinja
afresh from the installed tokenizers (needed only if tokenizers changes its Unicode tables).
"""
from __future__ import annotations

import base64
import json
import math
import random
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import jinja2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # when run as a script

from golden import check

from recipes.inputs.checkpoint import default_model_dir
from recipes.errors import ConfigError, ModelError
from recipes.package.stubs import TEMPLATES, render
from recipes.package.wordpiece import (
    PAD_CANDIDATES,
    java_package,
    wordpiece_spec,
    write_vocab_txt,
)

SHIMS = Path(__file__).parent / "java_shims"
TABLES_TEMPLATE = TEMPLATES / "android" / "BertUnicodeTables.java.jinja"
JAVA_SOURCES = ("WordPieceTokenizer", "BertUnicodeTables", "TextClassifier")
JAVAC, JAVA = shutil.which("javac"), shutil.which("java")
needs_jdk = pytest.mark.skipif(not (JAVAC and JAVA), reason="no javac/java on PATH (a JDK 17): the Java stub is neither compiled nor run")

# The MiniLM tokenizer's spec, spelled out so the golden files do not depend on the installed model.
MINILM_SPEC = {
    "clean_text": True, "handle_chinese_chars": True, "strip_accents": True, "lowercase": True,
    "unk_token": "[UNK]", "unk_id": 100, "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
    "cls_token": "[CLS]", "cls_id": 101, "sep_token": "[SEP]", "sep_id": 102, "pad_token": "[PAD]", "pad_id": 0,
    "vocab_size": 30522,
    "added_tokens": [{"content": c, "id": i, "single_word": False, "normalized": False}
                     for c, i in (("[PAD]", 0), ("[UNK]", 100), ("[CLS]", 101), ("[SEP]", 102), ("[MASK]", 103))],
    "added_only_ids": [],
}

CONTEXT = {
    "target": "android",
    "description": "Android phone, arm64: PyTorch Lite and ExecuTorch",
    "labels": ["negative", "positive"],
    "default_artifact": "ptl_int8",
    "artifacts": [
        {"name": "ptl_int8", "format": "ptl", "precision": "int8", "runtime": "pytorch_lite", "path": "models/ptl_int8.ptl"},
        {"name": "pte_8da4w", "format": "pte", "precision": "int4", "runtime": "executorch", "path": "models/pte_8da4w.pte"},
    ],
    "max_length": 128,
    "min_length": 4,
    "input_names": ["input_ids", "attention_mask", "token_type_ids"],
    "runtime_version": "0.1.0",
    "executorch_version": "1.5.1",
    "java_package": "ai.edgesmith.bundle",
    "wordpiece": MINILM_SPEC,
}

# Strings that are hard to carry into Java source: quotes, backslashes before "u" (javac
# translates \\uXXXX before it parses), comment ends, U+2028, controls, emoji.
NASTY = ['neg"ative', "back\\slash \\u000a \\\\u0022", "*/ /* // end", "line\u2028sep\u2029para", "ctl\x00\x01\x1f\x7f",
         "tab\tnew\nline\rcr", "emoji 😀👩‍💻", "ü ß 中文"]

MINILM = default_model_dir() / "tokenizer.json"


# --- the WordPiece spec and vocab.txt ------------------------------------------------------


def test_spec_of_minilm():
    assert wordpiece_spec(MINILM) == MINILM_SPEC


def test_spec_of_trained_tokenizer(tiny_tokenizer):
    spec = wordpiece_spec(tiny_tokenizer)
    assert (spec["pad_id"], spec["unk_id"], spec["cls_id"], spec["sep_id"]) == (0, 1, 2, 3)
    assert spec["strip_accents"] is True and spec["vocab_size"] == 400


def test_spec_of_other_bert_spellings(tmp_path):
    # BertProcessing instead of a template; no normalizer at all is BertNormalizer with every step off.
    data = json.loads(MINILM.read_text(encoding="utf-8"))
    data["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}
    data["normalizer"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    off = dict.fromkeys(("clean_text", "handle_chinese_chars", "strip_accents", "lowercase"), False)
    assert wordpiece_spec(tmp_path / "tokenizer.json") == {**MINILM_SPEC, **off}


def test_pad_candidates_follow_the_runtime():
    from runtime.tokenize import PAD_CANDIDATES as RUNTIME_PAD_CANDIDATES

    assert PAD_CANDIDATES == RUNTIME_PAD_CANDIDATES


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_spec_rejects_bpe(tmp_path):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["a roberta style byte level bpe"] * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"]))
    tok.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ModelError) as exc:
        wordpiece_spec(tmp_path / "tokenizer.json")
    message = _one_line(exc)
    assert "model is BPE" in message and "WordPiece tokenizers only" in message


@pytest.mark.parametrize("section, value, expected", [
    ("normalizer", {"type": "NFKC"}, "normalizer is NFKC"),
    ("pre_tokenizer", {"type": "Whitespace"}, "pre_tokenizer is Whitespace"),
    ("post_processor", None, "post_processor is None"),
    ("post_processor", {"type": "TemplateProcessing", "single": 5}, "post_processor is malformed"),
    ("post_processor", {"type": "RobertaProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}, "post_processor is RobertaProcessing"),
])
def test_spec_rejects_other_pipelines(tmp_path, section, value, expected):
    data = json.loads(MINILM.read_text(encoding="utf-8"))
    data[section] = value
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError) as exc:
        wordpiece_spec(tmp_path / "tokenizer.json")
    assert expected in _one_line(exc)


def test_vocab_txt_is_bert_vocab_txt(tmp_path):
    write_vocab_txt(MINILM, tmp_path / "vocab.txt")
    assert (tmp_path / "vocab.txt").read_bytes() == (MINILM.parent / "vocab.txt").read_bytes()


@pytest.mark.parametrize("edit, expected", [
    (lambda v: v.pop("hello"), "ids have gaps (first missing id 7592)"),
    (lambda v: v.update({"a\nb": len(v)}), "contains a line break"),
    (lambda v: v.update({"dup": 5}), "vocab id 5 is used by both"),
])
def test_vocab_txt_refuses_what_a_line_file_cannot_hold(tmp_path, edit, expected):
    data = json.loads(MINILM.read_text(encoding="utf-8"))
    edit(data["model"]["vocab"])
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError) as exc:
        write_vocab_txt(tmp_path / "tokenizer.json", tmp_path / "vocab.txt")
    assert expected in _one_line(exc)
    assert not (tmp_path / "vocab.txt").exists()


@pytest.mark.parametrize("name", ["ai.edgesmith.bundle", "com.example.app_1", "x"])
def test_java_package_accepts(name):
    assert java_package(name) == name


@pytest.mark.parametrize("name", ["", "a..b", "1abc", "com.example.int", "a.b; import x", "café.app", None])
def test_java_package_rejects(name):
    with pytest.raises(ConfigError) as exc:
        java_package(name)
    assert "not a Java package name" in _one_line(exc)


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["WordPieceTokenizer.java", "TextClassifier.java", "README.md"])
def test_golden(template):
    check(f"android_{template}", render(f"android/{template}", CONTEXT))


@pytest.mark.parametrize("key", ["java_package", "wordpiece", "min_length", "input_names", "executorch_version", "labels"])
def test_missing_value_is_an_error(key):
    with pytest.raises(jinja2.UndefinedError):
        for template in ("WordPieceTokenizer.java", "TextClassifier.java", "README.md"):
            render(f"android/{template}", {k: v for k, v in CONTEXT.items() if k != key})


def test_readme_names_only_the_runtimes_it_needs():
    only_pte = dict(CONTEXT, default_artifact="pte_8da4w", artifacts=CONTEXT["artifacts"][1:])
    readme = render("android/README.md", only_pte)
    assert "executorch-android:1.5.1" in readme and "pytorch_android_lite" not in readme


# --- Unicode tables ------------------------------------------------------------------------

CODE_POINTS = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def _per_code_point(normalizer) -> dict[int, str]:
    """{code point: its normalized text} for every code point the normalizer changes."""
    changed = {}
    for i in range(0, len(CODE_POINTS), 8192):
        chunk = [c for c in CODE_POINTS[i:i + 8192] if c != 0x7C]  # "|" separates them
        out = normalizer.normalize_str("|".join(map(chr, chunk))).split("|")
        assert len(out) == len(chunk)
        changed.update((c, o) for c, o in zip(chunk, out) if o != chr(c))
    return changed


def _ranges(code_points) -> list[int]:
    out: list[list[int]] = []
    for c in sorted(code_points):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return [x for r in out for x in r]


def _lowercase_runs(mapping: dict[int, int]) -> list[int]:
    """(first, last, delta, step) runs: every step-th code point from first to last maps to +delta."""
    runs: list[list[int]] = []
    for c in sorted(mapping):
        delta = mapping[c] - c
        if runs and runs[-1][2] == delta:
            gap, step = c - runs[-1][1], runs[-1][3]
            if (gap == 1 and step in (0, 1)) or (gap == 2 and step in (0, 2) and c - 1 not in mapping):
                runs[-1][1], runs[-1][3] = c, gap
                continue
        runs.append([c, c, delta, 0])
    return [x for first, last, delta, step in runs for x in (first, last, delta, step or 1)]


def unicode_tables() -> dict[str, list[int]]:
    """The character classes of tokenizers' BertNormalizer and BertPreTokenizer, by probing them."""
    from tokenizers import normalizers, pre_tokenizers

    def bert(**on):
        off = {"clean_text": False, "handle_chinese_chars": False, "strip_accents": False, "lowercase": False}
        return normalizers.BertNormalizer(**{**off, **on})

    removed = [c for c, o in _per_code_point(bert(clean_text=True)).items() if o == ""]
    stripped = _per_code_point(bert(strip_accents=True))
    marks = {c for c, o in stripped.items() if o == ""}
    # Decompositions newer than tokenizers' own table (Python's may be newer still than Java's).
    kept_whole = []
    for c in CODE_POINTS:
        nfd = unicodedata.normalize("NFD", chr(c))
        if nfd != chr(c):
            if stripped.get(c, chr(c)) == chr(c) and "".join(d for d in nfd if ord(d) not in marks) != chr(c):
                kept_whole.append(c)
            else:
                assert stripped.get(c, chr(c)) == "".join(d for d in nfd if ord(d) not in marks), hex(c)
    lower = _per_code_point(bert(lowercase=True))
    assert {c for c, o in lower.items() if len(o) != 1} == {0x130}, "a new multi-character lowercase mapping"
    punctuation = set()
    pre = pre_tokenizers.BertPreTokenizer()
    for i in range(0, len(CODE_POINTS), 8192):
        # Glued between "x"s, only punctuation comes out as a token of its own.
        chunk = [c for c in CODE_POINTS[i:i + 8192] if c != 0x78]
        punctuation.update(ord(w) for w, _ in pre.pre_tokenize_str("x".join(map(chr, chunk))) if len(w) == 1 and w != "x")
    return {"CLEAN_TEXT_REMOVED": _ranges(removed), "NONSPACING_MARK": _ranges(marks), "NOT_DECOMPOSED": _ranges(kept_whole),
            "PUNCTUATION": _ranges(punctuation),
            "LOWERCASE": _lowercase_runs({c: ord(o) for c, o in lower.items() if c != 0x130})}


def tables_template(tables: dict[str, list[int]]) -> str:
    def rows(items: list[str], per_line: int) -> str:
        return "".join(f"            {', '.join(items[i:i + per_line])},\n" for i in range(0, len(items), per_line))

    def ranges(name: str) -> str:
        return rows([f"0x{x:04X}" for x in tables[name]], 8)

    low = tables["LOWERCASE"]
    runs = rows([f"0x{low[i]:04X}, 0x{low[i + 1]:04X}, {low[i + 2]}, {low[i + 3]}" for i in range(0, len(low), 4)], 2)
    return TABLES_SOURCE.format(removed=ranges("CLEAN_TEXT_REMOVED"), marks=ranges("NONSPACING_MARK"),
                                not_decomposed=ranges("NOT_DECOMPOSED"), punctuation=ranges("PUNCTUATION"), lowercase=runs)


TABLES_SOURCE = '''\
package {{{{ java_package }}}};

/**
 * Character classes of the Hugging Face tokenizers library's BertNormalizer and BertPreTokenizer
 * (generated by edgesmith from tokenizers itself; see WordPieceTokenizer).
 *
 * <p>tokenizers' tables are of an older Unicode version than Java's, and Android's
 * java.lang.Character follows whatever Unicode version the device has: with these tables the
 * tokenizer gives the same ids as tokenizers on every device.
 */
final class BertUnicodeTables {{
    private BertUnicodeTables() {{
    }}

    /** Removed by clean_text: NUL, U+FFFD, and Cc, Cf, Co (tab, LF and CR become spaces instead). */
    static boolean isRemovedByCleanText(int cp) {{
        return inRanges(CLEAN_TEXT_REMOVED, cp);
    }}

    /** Removed by strip_accents after canonical decomposition (Mn). */
    static boolean isNonspacingMark(int cp) {{
        return inRanges(NONSPACING_MARK, cp);
    }}

    /** Left whole by strip_accents although newer Unicode versions give them a canonical decomposition. */
    static boolean isNotDecomposed(int cp) {{
        return inRanges(NOT_DECOMPOSED, cp);
    }}

    /** Isolated by the pre-tokenizer: ASCII punctuation and symbols, and Unicode P*. */
    static boolean isPunctuation(int cp) {{
        return inRanges(PUNCTUATION, cp);
    }}

    /** Simple lowercase of one code point (U+0130 maps to two and is the caller's business). */
    static int toLowerCase(int cp) {{
        int lo = 0;
        int hi = LOWERCASE.length / 4 - 1;
        while (lo <= hi) {{
            int mid = (lo + hi) >>> 1;
            if (LOWERCASE[4 * mid] > cp) {{
                hi = mid - 1;
            }} else if (LOWERCASE[4 * mid + 1] < cp) {{
                lo = mid + 1;
            }} else {{
                return (cp - LOWERCASE[4 * mid]) % LOWERCASE[4 * mid + 3] == 0 ? cp + LOWERCASE[4 * mid + 2] : cp;
            }}
        }}
        return cp;
    }}

    /** Binary search in sorted, disjoint, inclusive [first, last] pairs. */
    private static boolean inRanges(int[] ranges, int cp) {{
        int lo = 0;
        int hi = ranges.length / 2 - 1;
        while (lo <= hi) {{
            int mid = (lo + hi) >>> 1;
            if (ranges[2 * mid] > cp) {{
                hi = mid - 1;
            }} else if (ranges[2 * mid + 1] < cp) {{
                lo = mid + 1;
            }} else {{
                return true;
            }}
        }}
        return false;
    }}

    private static final int[] CLEAN_TEXT_REMOVED = {{
{removed}    }};

    private static final int[] NONSPACING_MARK = {{
{marks}    }};

    private static final int[] NOT_DECOMPOSED = {{
{not_decomposed}    }};

    private static final int[] PUNCTUATION = {{
{punctuation}    }};

    /** first, last, delta, step: every step-th code point from first to last lowercases to cp + delta. */
    private static final int[] LOWERCASE = {{
{lowercase}    }};
}}
'''


@pytest.fixture(scope="module")
def probed_tables() -> dict[str, list[int]]:
    return unicode_tables()


def test_unicode_tables_are_tokenizers_tables(probed_tables):
    assert TABLES_TEMPLATE.read_text(encoding="utf-8") == tables_template(probed_tables), (
        "tokenizers' Unicode tables changed; regenerate with "
        f".venv/bin/python tests/test_android_stub.py > {TABLES_TEMPLATE.relative_to(TEMPLATES.parent)} and review")


# --- compiling and running the Java ----------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory, tiny_rows) -> Path:
    from tiny_model import train_tokenizer

    return train_tokenizer([r["text"] for r in tiny_rows], tmp_path_factory.mktemp("tiny-tokenizer"))


def compile_stub(out: Path, context: dict) -> Path:
    """Render the Java sources into out/src, compile them with the shims and the test driver."""
    src = out / "src" / Path(*context["java_package"].split("."))
    src.mkdir(parents=True)
    files = []
    for name in JAVA_SOURCES:
        files.append(src / f"{name}.java")
        files[-1].write_text(render(f"android/{name}.java", context), encoding="utf-8")
    files += sorted(SHIMS.rglob("*.java"))
    # --release 8: Android's Java language level; -Werror: the generated code compiles cleanly.
    proc = subprocess.run([JAVAC, "--release", "8", "-encoding", "UTF-8", "-Xlint:all", "-Werror", "-d", str(out / "classes"),
                           *map(str, files)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "classes"


def run_java(classes: Path, requests: list[str], tmp: Path, *args: str) -> list[str]:
    """One JVM for all requests (lines of the driver's input), one output line each."""
    (tmp / "requests.txt").write_text("".join(r + "\n" for r in requests), encoding="utf-8")
    proc = subprocess.run([JAVA, "-cp", str(classes), "edgesmith.TokenizeMain", *args, str(tmp / "requests.txt")],
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    lines = proc.stdout.decode("utf-8").splitlines()
    assert len(lines) == len(requests)
    return lines


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def unb64(field: str) -> str:
    return base64.b64decode(field).decode("utf-8")


def stub_for(tokenizer_json: Path, tmp: Path, **context) -> tuple[Path, Path]:
    vocab = tmp / "vocab.txt"
    write_vocab_txt(tokenizer_json, vocab)
    classes = compile_stub(tmp, {**CONTEXT, "wordpiece": wordpiece_spec(tokenizer_json), **context})
    return classes, vocab


@pytest.fixture(scope="module")
def minilm_stub(tmp_path_factory) -> tuple[Path, Path]:
    # Nasty strings in every value that enters the Java as a literal, to check they survive.
    return stub_for(MINILM, tmp_path_factory.mktemp("minilm-stub"), labels=NASTY, target=NASTY[1],
                    description=NASTY[3], default_artifact=NASTY[0],
                    artifacts=[{**CONTEXT["artifacts"][0], "name": NASTY[0], "path": NASTY[2]}])


@needs_jdk
def test_generated_java_compiles_against_the_runtime_apis(minilm_stub):
    classes, _ = minilm_stub
    assert (classes / "ai" / "edgesmith" / "bundle" / "TextClassifier$ExecuTorchBackend.class").is_file()


@needs_jdk
def test_values_enter_java_as_literals(minilm_stub, tmp_path):
    classes, _ = minilm_stub
    [line] = run_java(classes, ["constants"], tmp_path, "driver")
    target, description, default, *labels = map(unb64, line.split(","))
    assert (target, description, default, labels) == (NASTY[1], NASTY[3], NASTY[0], NASTY)


def check_classify(classes: Path, vocab: Path, tokenizer_json: Path, context: dict, tmp: Path) -> None:
    """TextClassifier.classify("hi") with the driver's fake backend, which records its inputs and
    returns logits 2.5 for label 1 and -i for label i."""
    from runtime.tokenize import TextEncoder

    [line] = run_java(classes, ["classify"], tmp, "driver", str(vocab))
    inputs, (label, score, scores) = line.split("|")[0].split(";"), line.split("|")[1].split(";")
    expected = {k: v[0].tolist() for k, v in TextEncoder.from_file(tokenizer_json, 128).encode(["hi"]).items()}
    pad = context["min_length"] - len(expected["input_ids"])
    assert pad > 0  # the case under test: shorter than the models' smallest sequence
    expected["input_ids"] += [context["wordpiece"]["pad_id"]] * pad
    expected["attention_mask"] += [0] * pad
    expected["token_type_ids"] += [0] * pad
    assert [list(map(int, i.split())) for i in inputs] == [expected[name] for name in context["input_names"]]
    logits = [2.5 if i == 1 else -i for i in range(len(context["labels"]))]
    softmax = [math.exp(x) / sum(math.exp(y) for y in logits) for x in logits]
    assert unb64(label) == context["labels"][1] and float(score) == pytest.approx(softmax[1], rel=1e-6)
    assert [float(x) for x in scores.strip("[]").split(",")] == pytest.approx(softmax, rel=1e-6)


@needs_jdk
def test_classify_pads_and_scores(minilm_stub, tmp_path):
    classes, vocab = minilm_stub
    check_classify(classes, vocab, MINILM, {**CONTEXT, "labels": NASTY}, tmp_path)


# Texts that exercise every step of BERT tokenization; more are generated below.
SENTENCES = [
    "", " ", "\t\n\r", "Hello, world!", "The battery lasts ALL DAY.", "café naïve Ångström façade résumé coöperate",
    "ÉCOLE ÉLÈVE", "Ça va? Très bien.", "İstanbul ıi İi", "Straße STRASSE ẞ", "ΣΊΣΥΦΟΣ σίσυφος", "ǅemal ǈubljana",
    "中文分词测试", "日本語のテキストです", "한국어 텍스트입니다", "混合 mixed 中英文 text", "𠀀𠀁 supplementary CJK 𪜀",
    "emoji 😀😃😄 end", "👩‍💻 zwj sequence", "👨‍👩‍👧‍👦 family", "👍🏽 skin tone 👋🏿", "🏳️‍🌈 flag", "🇺🇸🇩🇪 regional",
    "keycap 1️⃣ #️⃣", "♥️ heart with VS16", "a\u200db\u200cc zero width", "soft\u00adhyphen", "bom\ufeffinside",
    "\u0000nul\u0001ctl\u007fdel", "replacement \ufffd char", "private \ue000 use \U000f0000", "tab\tsep\tvalues",
    "line\nbreaks\r\nwindows", "nbsp\u00a0here and\u2003em\u3000ideo", "line\u2028sep para\u2029sep", "next\u0085line",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "¡¿ «» ‹› „“ ‚‘ — – … · • ‰ ′ ″ ※ ‼ ⁇", "。、「」『』【】〜・",
    "١٢٣ ٪ ؟ ، ؛", "price: $19.99 (€17,50) £5 ¥300", "100% of 3.14159 is 3,1416", "2024-01-15T10:30:00Z",
    "https://example.com/path?q=1&r=two#frag", "user@example.org wrote: >>> quote", "C:\\Users\\name\\file.txt",
    "<html><body class=\"x\">text</body></html>", "{\"json\": [1, 2, {\"k\": null}]}", "x**2 + y**2 = z**2; a != b",
    "مرحبا بالعالم", "שלום עולם", "Привет, мир! Ёжик", "Γειά σου Κόσμε", "สวัสดีครับ ภาษาไทย", "नमस्ते दुनिया हिन्दी",
    "Tiếng Việt có dấu", "Ελληνικά ΆΈΉΊΌΎΏ", "ქართული ენა", "Հայերեն", "አማርኛ", "ᏣᎳᎩ", "ⲘⲉⲧⲢⲉⲙⲛⲕⲏⲙⲉ",
    "e\u0301 combining acute", "a\u0308o\u0308u\u0308", "Z\u0351\u0337a\u0336\u0324l\u0338g\u0335o\u0340 text",
    "ﬁ ligature ﬂ", "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "ℌℑℜ ℕ ℤ", "①②③ ⅠⅡⅢ", "½ ¼ ¾ ² ³", "x\u0307\u0323 dots",
    "[CLS] typed [SEP] in text [MASK]", "[cls] lower [mask]", "no[MASK]space", "[[MASK]]", "[PAD][UNK]",
    "a" * 99, "b" * 100, "c" * 101, "d" * 150, "é" * 101, "😀" * 101, "supercalifragilisticexpialidocious",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "word " * 200, "长" * 300, "The quick brown fox jumps over the lazy dog. " * 20,
    "   leading and trailing spaces   ", "MiXeD CaSe WoRdS", "don't can't won't it's", "e.g. i.e. etc. U.S.A.",
    "#hashtag @mention $TICKER", "snake_case camelCase kebab-case", "ＡＢＣ", "°C ± µm Ω ∑ ∞ ≠ ≤ √",
    "\U0001d400\U0001d401 math bold", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "Ⓐⓑⓒ", "ǰ ǯ ȷ", "ŉ ʼn", "ﬀ ﬃ ﬄ", "Ⱥ ⱥ Ⱦ ⱦ",
    "Ⴀ ⴀ Ꭰ ꭰ", "\U00010400\U00010428 Deseret", "\U0001e900\U0001e922 Adlam", "𐓀 𐓘 Osage",
]


def generated_sentences(count: int = 160) -> list[str]:
    """Deterministic random mixes of scripts, marks, emoji, punctuation, digits and whitespace."""
    rng = random.Random(20240604)
    pools = [
        ["hello", "world", "Battery", "GREAT", "movie", "terrible", "don't", "x", "ab12", "naïve", "Zürich", "café"],
        list("中文字詞語日本語한국어"), ["Привет", "мир", "Γειά", "κόσμε", "مرحبا", "שלום", "สวัสดี", "नमस्ते", "ąęłńśźż"],
        list("😀😂🥰🫠🧑‍💻👍🏻👍🏿❤️🇫🇷✨🎉"), list("!?.,;:'\"()[]{}<>/\\|@#$%^&*-_=+~`¡¿«»—–…·•§¶†‡"),
        ["\u0301", "\u0308", "\u0323", "\u20e3", "\ufe0f", "\u200d", "\u200b", "\u00ad", "\u0000", "\u001b", "\ufffd"],
        [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2009", "\u3000", "\u2028"], ["0", "42", "3.14", "1,000", "٣", "१२"],
        [chr(rng.randrange(0x20, 0x2FFF)) for _ in range(40)] + [chr(rng.randrange(0x10000, 0x1FAFF)) for _ in range(20)],
    ]
    texts = []
    for _ in range(count):
        parts = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 40))]
        texts.append("".join(p if rng.random() < 0.3 else p + " " for p in parts))
    return texts


def corpus(tiny_rows) -> list[str]:
    return SENTENCES + generated_sentences() + [r["text"] for r in tiny_rows[::4]]


def check_ids_against_runtime(tokenizer_json: Path, classes: Path, vocab: Path, texts: list[str], tmp: Path) -> int:
    """Encode every text at max_length 128 and at a short length with the Java tokenizer and with
    runtime.tokenize.TextEncoder (what the bundle's Python runtime and the build's evaluation use);
    return how many (text, max_length) pairs gave identical input_ids, attention_mask and token_type_ids."""
    from runtime.tokenize import TextEncoder

    requests = [(text, max_length) for i, text in enumerate(texts) for max_length in (128, 2 + i % 15)]
    lines = run_java(classes, [f"encode {m} {b64(t)}" for t, m in requests], tmp, "driver", str(vocab))
    encoders = {m: TextEncoder.from_file(tokenizer_json, m) for m in {m for _, m in requests}}
    mismatches = []
    for (text, max_length), line in zip(requests, lines):
        expected = encoders[max_length].encode([text])
        got = [[int(x) for x in field.split()] for field in line.split(";")]
        want = [expected[k][0].tolist() for k in ("input_ids", "attention_mask", "token_type_ids")]
        if got != want:
            mismatches.append((text, max_length, got[0], want[0]))
    assert not mismatches, f"{len(mismatches)} of {len(requests)} differ; first: {mismatches[0]!r}"
    return len(requests)


@needs_jdk
def test_java_ids_equal_runtime_ids_minilm(minilm_stub, tiny_rows, tmp_path):
    texts = corpus(tiny_rows)
    assert len(texts) >= 200
    assert check_ids_against_runtime(MINILM, *minilm_stub, texts, tmp_path) == 2 * len(texts)


@needs_jdk
def test_java_ids_equal_runtime_ids_trained_tokenizer(tiny_tokenizer, tiny_rows, tmp_path):
    classes, vocab = stub_for(tiny_tokenizer, tmp_path / "stub")
    texts = corpus(tiny_rows)
    assert check_ids_against_runtime(tiny_tokenizer, classes, vocab, texts, tmp_path) == 2 * len(texts)


@pytest.fixture(scope="module")
def variant_tokenizer(tiny_rows, tmp_path_factory) -> Path:
    """A tokenizer trained on texts with emoji, with added tokens of every kind, no accent
    stripping, no CJK splitting and words cut at 12 characters."""
    from tiny_model import train_tokenizer
    from tokenizers import AddedToken, Tokenizer

    out = tmp_path_factory.mktemp("variant-tokenizer")
    texts = [r["text"] for r in tiny_rows] + ["😀😀 😀🙂 🙂😀😀 𝔘𝔫𝔦 𝔫𝔦𝔘"] * 5
    tok = Tokenizer.from_file(str(train_tokenizer(texts, out, vocab_size=420)))
    tok.add_tokens([AddedToken("Foo Bar", normalized=True), AddedToken("héllo", normalized=True),
                    AddedToken("zz", single_word=True, normalized=False), AddedToken("zq", normalized=False)])
    tok.add_special_tokens([AddedToken("<x>", lstrip=True, rstrip=True, normalized=False), AddedToken("<x><y>", normalized=False)])
    data = json.loads(tok.to_str())
    data["normalizer"].update(strip_accents=False, handle_chinese_chars=False)
    data["model"]["max_input_chars_per_word"] = 12
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return out / "tokenizer.json"


ADDED_TOKEN_TEXTS = [
    "say <x> now", "a<x>b", "  <x>  ", "\t<x>\n", "<x><x>", "<x><y><x>", "<x> <y>", "foo bar", "FOO BAR baz", "Foo  Bar",
    "foobar", "zz azz zz! zz_ _zz zz1 (zz) zz", "zzz", "é zz é", "zzq", "zzzq",  # a rejected zz hides zq "héllo HÉLLO hello he\u0301llo", "[MASK] [mask]",
    "twelve chars", "thirteenchars", "abcdefghijkl abcdefghijklm", "中文 混合 text",
    # Twelve code points but more UTF-16 chars: still a word, not [UNK].
    "😀" * 12, "😀" * 13, "🙂😀" * 6, "𝔘𝔫𝔦" * 4, "𝔘𝔫𝔦" * 5, "x😀😀😀😀😀😀😀😀😀😀😀",
]


@needs_jdk
def test_java_ids_equal_runtime_ids_with_added_tokens(variant_tokenizer, tmp_path):
    spec = wordpiece_spec(variant_tokenizer)
    assert spec["added_only_ids"] == list(range(420, 426)) and not spec["strip_accents"]
    # And a model without token_type_ids, as DistilBERT.
    context = {**CONTEXT, "wordpiece": spec, "input_names": ["input_ids", "attention_mask"], "min_length": 8}
    classes, vocab = stub_for(variant_tokenizer, tmp_path / "stub", input_names=context["input_names"], min_length=8)
    texts = ADDED_TOKEN_TEXTS + SENTENCES
    assert check_ids_against_runtime(variant_tokenizer, classes, vocab, texts, tmp_path) == 2 * len(texts)
    check_classify(classes, vocab, variant_tokenizer, context, tmp_path)


@needs_jdk
def test_every_code_point_normalizes_and_splits_as_in_tokenizers(minilm_stub, tmp_path):
    """All 1,112,064 code points through the Java normalizer (three settings) and pre-tokenizer."""
    from tokenizers import normalizers, pre_tokenizers

    settings = {"1111": (True, True, True, True), "1101": (True, True, False, True), "1100": (True, True, False, False)}
    chunks = [[c for c in CODE_POINTS[i:i + 4096] if c not in (0x78, 0x7C)] for i in range(0, len(CODE_POINTS), 4096)]
    requests, expected = [], []
    for chunk in chunks:
        joined = "|".join(map(chr, chunk))
        for flags, (clean, chinese, strip, lower) in settings.items():
            requests.append(f"normalize {flags} {b64(joined)}")
            bert = normalizers.BertNormalizer(clean_text=clean, handle_chinese_chars=chinese, strip_accents=strip, lowercase=lower)
            expected.append(bert.normalize_str(joined))
        glued = "x".join(map(chr, chunk))
        requests.append(f"pretokenize - {b64(glued)}")
        expected.append(" ".join(b64(w) for w, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(glued)))
    lines = run_java(minilm_stub[0], requests, tmp_path, "driver")
    for request, line, want in zip(requests, lines, expected):
        got = line if request.startswith("pretokenize") else unb64(line)
        if got != want:
            first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b) if len(got) == len(want) else 0
            raise AssertionError(f"{request[:14]} differs near {got[first:first + 20]!r} vs {want[first:first + 20]!r}")


if __name__ == "__main__":
    sys.stdout.write(tables_template(unicode_tables()))
