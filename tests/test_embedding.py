"""Sentence embeddings (task = "embedding"): one end-to-end build of a tiny sentence-transformers model, and the
checks around it: the vectors are sentence-transformers' own, the report measures cosine and recall@10, and
the bundle's run.py, `python -m runtime` and serve.py's POST /embed give the graph's vectors."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_project, scons, stages_run
from tiny_model import demo_rows, make_checkpoint, make_sentence_transformers, write_csv, write_texts

PROFILE = REPO / "tests" / "fixtures" / "tiny_embedding.toml"
SHORT = ["a wonderful, moving film", "the plot made no sense at all", "great acting", "I want my money back",
         "an ordinary afternoon"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [r["text"] for r in demo_rows(40)]


@pytest.fixture(scope="module")
def st_model(tmp_path_factory, texts) -> Path:
    return make_sentence_transformers(tmp_path_factory.mktemp("st") / "st-tiny", texts)


@pytest.fixture(scope="module")
def built(tmp_path_factory, st_model, texts):
    """target=tiny_embedding on texts without labels (eval_fraction 0.5: about 40 eval texts for recall@10)."""
    root = tmp_path_factory.mktemp("embedding")
    project = make_project(root / "project")
    shutil.copy2(PROFILE, project / "targets" / "tiny_embedding.toml")
    data = write_texts(root / "texts.jsonl", texts)
    args = ("target=tiny_embedding", f"model={st_model}", f"data={data}", "eval_fraction=0.5")
    return project, args, scons(project, "-j2", *args, timeout=900)


def bundle_dir(project: Path) -> Path:
    return project / "build" / "tiny_embedding" / "bundle"


def test_the_build_measures_every_artifact_against_the_teachers_vectors(built):
    project, _, first = built
    ran = sorted(name for name, _ in stages_run(first))
    assert "embedder" in ran and "finetune" not in ran
    report = json.loads((project / "build" / "tiny_embedding" / "report.json").read_text())
    assert report["task"] == "embedding" and report["eval_examples"] >= 30
    rows = {r["name"]: r for r in report["artifacts"]}
    assert set(rows) == {"teacher", "fp32", "int8_dynamic", "ov_int8"}
    assert rows["teacher"]["cosine_mean"] == pytest.approx(1.0) and rows["teacher"]["recall_at_10"] == 1.0
    assert rows["fp32"]["cosine_p1"] > 0.9999 and rows["fp32"]["recall_at_10"] == 1.0
    for name in ("int8_dynamic", "ov_int8"):
        r = rows[name]
        assert 0.9 < r["cosine_p1"] <= r["cosine_mean"] <= 1.0 + 1e-6 and 0.5 <= r["recall_at_10"] <= 1.0, r
        assert r["gate_status"] == "pass" and "accuracy" not in r
    md = (project / "build" / "tiny_embedding" / "report.md").read_text()
    assert "| cosine mean | cosine p1 | recall@10 |" in md and "accuracy" not in md.split("## Arithmetic")[0]


def test_the_bundle_says_what_its_vectors_are(built):
    project, _, _ = built
    manifest = json.loads((bundle_dir(project) / "manifest.json").read_text())
    assert manifest["task"] == "embedding" and manifest["model"]["labels"] == []
    assert manifest["model"]["embedding"] == {"dimension": 32, "pooling": "mean", "normalize": True}
    assert manifest["outputs"] == [{"name": "sentence_embedding", "dtype": "float32", "shape": ["batch", 32]}]


def test_every_artifact_gives_sentence_transformers_vectors(built, st_model):
    """The pooling is in the graph: each artifact's vector is the one sentence-transformers computes."""
    from sentence_transformers import SentenceTransformer

    from runtime import load_bundle

    reference = SentenceTransformer(str(st_model), device="cpu", local_files_only=True).encode(SHORT)
    project, _, _ = built
    with load_bundle(bundle_dir(project)) as bundle:
        # (ov_int8 needs VNNI or AMX to run as built, which this host may lack: the report measured it where it could.)
        for name, tolerance in (("fp32", 1e-5), ("int8_dynamic", 0.05)):
            vectors = bundle.embedder(name).embed(SHORT)
            assert vectors.shape == (len(SHORT), 32) and vectors.dtype == np.float32
            assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
            assert float(np.abs(vectors - reference).max()) < tolerance, name
        with pytest.raises(Exception, match="sentence-embedding bundle has no labels"):
            bundle.classifier()


def test_run_py_and_the_runtime_cli_print_vectors_and_similarity(built):
    project, _, _ = built
    bundle = bundle_dir(project)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run([sys.executable, str(bundle / "run.py"), *SHORT[:2]], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["text"] for line in lines] == SHORT[:2] and all(len(line["embedding"]) == 32 for line in lines)
    a, b = (np.array(line["embedding"]) for line in lines)
    sim = subprocess.run([sys.executable, str(bundle / "run.py"), "--similarity", *SHORT[:2]], capture_output=True,
                         text=True, env=env, timeout=120)
    assert json.loads(sim.stdout)["similarity"] == pytest.approx(float(a @ b), abs=1e-6)
    wrong = subprocess.run([sys.executable, str(bundle / "run.py"), "--similarity", "only one"], capture_output=True,
                           text=True, env=env, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.strip() == "run.py: --similarity compares exactly two texts, got 1"
    search = subprocess.run([sys.executable, str(bundle / "run.py"), "--search", "great acting", "--top", "2", *SHORT],
                            capture_output=True, text=True, env=env, timeout=120)
    hits = [json.loads(line) for line in search.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["text"] == "great acting", search.stderr
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5) and hits[0]["score"] >= hits[1]["score"]
    cli = subprocess.run([sys.executable, "-m", "runtime", str(bundle), "--similarity", *SHORT[:2]], capture_output=True,
                         text=True, cwd=bundle, env=env, timeout=120)
    assert json.loads(cli.stdout)["similarity"] == pytest.approx(float(a @ b), abs=1e-6), cli.stderr


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_py_answers_post_embed(built):
    """serve.py on 127.0.0.1 (a free port), a handful of bounded requests."""
    from runtime import load_bundle

    project, _, _ = built
    bundle = bundle_dir(project)
    spec = importlib.util.spec_from_file_location("embedding_serve", bundle / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    with load_bundle(bundle) as b:
        app = serve.App(b, serve.parse_args(["--bundle", str(bundle), "--providers", "cpu"]))
        expected = b.embedder(app.default).embed(SHORT)
        server = serve.Server(("127.0.0.1", 0), serve.Handler, app)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            status, reply = post(base + "/embed", {"texts": SHORT})
            assert status == 200 and reply["dimension"] == 32 and reply["artifact"] == app.default
            assert np.allclose(np.array(reply["embeddings"]), expected, atol=1e-6)
            status, reply = post(base + "/predict", {"texts": SHORT})
            assert status == 400 and reply["error"] == "this bundle is a embedding model: POST /embed, not /predict"
            status, reply = post(base + "/embed", {"texts": "one text"})
            assert status == 400 and "must be an array of strings" in reply["error"]
            with urllib.request.urlopen(base + "/metadata", timeout=30) as meta:
                info = json.loads(meta.read())
            assert info["task"] == "embedding" and info["endpoint"] == "/embed" and info["dimension"] == 32
        finally:
            server.shutdown()
            server.server_close()


def test_the_shipped_embedding_profile_declares_its_build(tmp_path, st_model, texts):
    """targets/cpu_embedding.toml, read and declared (scons -n) on a sentence-transformers checkpoint: every check
    at read time passes and the stages it would run are the embedding ones (its full build is the tiny profile's)."""
    project = make_project(tmp_path / "p")
    data = write_texts(tmp_path / "texts.jsonl", texts)
    out = scons(project, "-n", "target=cpu_embedding", f"model={st_model}", f"data={data}")
    ran = {name for name, _ in stages_run(out)}
    assert {"embedder", "export", "fuse", "quantize", "openvino", "evaluate", "report", "bundle"} <= ran
    assert "finetune" not in ran


def test_target_all_on_a_plain_checkpoint_passes_over_the_embedding_profile_with_a_note(tmp_path, texts):
    project = make_project(tmp_path / "p")
    model = make_checkpoint(tmp_path / "plain", texts)
    data = write_csv(tmp_path / "labelled.csv", demo_rows(40))
    out = scons(project, "-n", "target=all", f"model={model}", f"data={data}")
    assert "edgesmith: note: target=all passes over cpu_embedding: task = 'embedding': an embedding build needs the " \
           "checkpoint's sentence-transformers files" in out.stdout
    assert "embedder" not in {name for name, _ in stages_run(out)}
    named = scons(project, "-n", "target=cpu_embedding", f"model={model}", f"data={data}", check=False)
    assert named.returncode == 2 and "an embedding build needs the checkpoint's sentence-transformers files" in named.stderr


# --- what an embedding build refuses, in one line ----------------------------------------------------------


def test_a_classification_build_of_unlabelled_texts_says_to_use_task_embedding(tmp_path, texts):
    project = make_project(tmp_path / "p")
    model = make_checkpoint(tmp_path / "plain", texts)
    data = write_texts(tmp_path / "texts.jsonl", texts)
    out = scons(project, "target=tiny", f"model={model}", f"data={data}", check=False)
    assert out.returncode != 0
    assert f"{data}: no label column 'label'; columns found: text; pass label_column=NAME, or, for texts without " \
           "labels, build a sentence-embedding model (task=embedding" in out.stdout + out.stderr


def test_task_embedding_needs_the_sentence_transformers_files(tmp_path, texts):
    project = make_project(tmp_path / "p")
    model = make_checkpoint(tmp_path / "plain", texts)
    data = write_texts(tmp_path / "texts.jsonl", texts)
    out = scons(project, "-n", "target=tiny", "task=embedding", f"model={model}", f"data={data}", check=False)
    line = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and line.startswith("edgesmith: error: task=embedding: an embedding build needs the "
                                                   "checkpoint's sentence-transformers files"), out.stderr


def edited(old: str, new: str) -> str:
    text = PROFILE.read_text()
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize("profile,message", [
    (lambda: edited("[gates]\n", "[gates]\nmin_agreement = 0.9\n"),
     "gates.min_agreement = 0.9 judges a classifier, and this build makes an embedding model (task = 'embedding' in "
     "the profile); use min_cosine, min_recall_at_10, or build the other task (task=classification)"),
    (lambda: edited("[gates]\n", "[[models]]\nname = 's'\ndistill = { layers = 1, max_length = 32 }\n\n[gates]\n"),
     "models[0] (s): distilled and pruned embedding models are not built yet"),
    (lambda: edited('[bundle]\ndefault_artifact = "int8_dynamic"\n', "[budget]\nsize_mb = 1\n"),
     "[budget] is not available for embedding builds yet"),
], ids=["classification gate", "models", "budget"])
def test_what_an_embedding_profile_cannot_use_is_refused(tmp_path, st_model, texts, profile, message):
    project = make_project(tmp_path / "p")
    (project / "targets" / "bad.toml").write_text(profile())
    data = write_texts(tmp_path / "texts.jsonl", texts)
    out = scons(project, "-n", "target=bad", f"model={st_model}", f"data={data}", check=False)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unsupported_pooling_is_one_line(tmp_path, texts):
    from recipes.errors import ModelError
    from recipes.models.embedding import read_sentence_transformers

    model = make_sentence_transformers(tmp_path / "m", texts[:20])
    config = model / "1_Pooling" / "config.json"
    pooling = json.loads(config.read_text())
    config.write_text(json.dumps(dict(pooling, pooling_mode_mean_tokens=False, pooling_mode_mean_sqrt_len_tokens=True)))
    with pytest.raises(ModelError, match=r"1_Pooling/config.json: pooling_mode_mean_sqrt_len_tokens = true is not "
                                         r"supported"):
        read_sentence_transformers(model, 32)
    config.write_text(json.dumps(dict(pooling, pooling_mode_cls_token=True)))
    with pytest.raises(ModelError, match="more than one pooling mode is set"):
        read_sentence_transformers(model, 32)
    modules = json.loads((model / "modules.json").read_text())
    (model / "modules.json").write_text(json.dumps(modules[:2] + [{"idx": 2, "name": "2", "path": "2_Dense",
                                                                   "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ModelError, match="module 2 is sentence_transformers.models.Dense"):
        read_sentence_transformers(model, 32)
    (model / "modules.json").write_text(json.dumps(modules))
    config.write_text(json.dumps(pooling))
    assert read_sentence_transformers(model, 32).mode == "mean"
    with pytest.raises(ModelError, match="word_embedding_dimension = 32, but the encoder's hidden_size is 64"):
        read_sentence_transformers(model, 64)


@pytest.mark.parametrize("pooling,normalize", [("cls", False), ("max", True)])
def test_cls_and_max_pooling_are_sentence_transformers_own(tmp_path, texts, pooling, normalize):
    """The pooling edgesmith builds into the graph, against sentence-transformers on the same checkpoint, with
    padding in the batch (max pooling must not pick padded positions)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from recipes.models.embedding import read_sentence_transformers
    from recipes.models.hf import load_embedding
    from recipes.textenc import Encoder

    model_dir = make_sentence_transformers(tmp_path / "m", texts[:20], pooling=pooling, normalize=normalize)
    ours = load_embedding(model_dir, read_sentence_transformers(model_dir, 32))
    feeds = Encoder(model_dir / "tokenizer.json", 64).encode(SHORT, ("input_ids", "attention_mask", "token_type_ids"))
    with torch.inference_mode():
        got = ours(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    want = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True).encode(SHORT)
    assert float(np.abs(got - want).max()) < 1e-5


def test_recall_at_10_and_cosine():
    from recipes.measure.embedding_metrics import compare, recall_at_k

    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(60, 16))
    assert compare(teacher, teacher) == {"cosine_mean": pytest.approx(1.0), "cosine_p1": pytest.approx(1.0),
                                         "cosine_min": pytest.approx(1.0), "recall_at_10": 1.0}
    assert recall_at_k(teacher * 3.0, teacher) == 1.0  # cosine neighbours ignore scale
    noisy = compare(teacher + rng.normal(scale=0.3, size=teacher.shape), teacher)
    assert 0.5 < noisy["cosine_p1"] < noisy["cosine_mean"] < 1.0 and noisy["recall_at_10"] < 1.0
    unrelated = recall_at_k(rng.normal(size=teacher.shape), teacher)
    assert unrelated < 0.4  # chance is 10/59
    with pytest.raises(ValueError, match="recall@10 needs more than 10 texts"):
        recall_at_k(teacher[:10], teacher[:10])
