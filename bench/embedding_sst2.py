"""Sentence-embedding benchmark: edgesmith's embedding artifacts of all-MiniLM-L6-v2 against
sentence-transformers' own ONNX, int8 and OpenVINO exports of the same model, on SST-2's texts.

1. Writes SST-2 texts without labels (bench/work/embedding/): a stated subset of train (calibration) and
   the full dev set (the eval corpus: cosine and recall@10 are measured over its texts).
2. Builds bench/embedding_sst2.toml (targets/cpu_embedding.toml's artifacts) on them with scons: every artifact is evaluated against the teacher's
   vectors (report.json), and its bundle ships.
3. Makes sentence-transformers' variants (bench/sentence_transformers/run_st.py, each in its own venv) and
   encodes the same eval texts with each: their cosine and recall@10 come from the same code as ours
   (recipes/measure/embedding_metrics.py), against the same teacher vectors.
4. Times every variant, ours and theirs, each in its own process, in alternating rounds, with the same
   threads and the same texts; a variant's latency is the median over rounds of its per-process median.
5. Writes bench/results/embedding.md and .json: the machine, the versions, the table, the issue's targets
   marked met or missed.

Usage: .venv/bin/python bench/embedding_sst2.py [--data-dir ../shared/data/sst2] [--train-size 2000]
       [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
SCONS = str(Path(sys.executable).with_name("scons"))
WORK = ROOT / "bench" / "work" / "embedding"
ST_DIR = ROOT / "bench" / "sentence_transformers"
ST_VENVS = {"st": ROOT / "bench" / ".venv-st", "st-onnx": ROOT / "bench" / ".venv-st-onnx"}
PROFILE = ROOT / "bench" / "embedding_sst2.toml"  # targets/cpu_embedding.toml's artifacts, gates that do not stop it
TARGET = PROFILE.stem
BATCHES = (1, 32)

from recipes.wiring.graph import package_version  # noqa: E402
from sst2 import cpu_name  # noqa: E402  (bench/sst2.py's machine helper)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def write_texts(src: Path, dst: Path, text_column: str, size: int | None, prefix: str) -> int:
    """Every k-th sentence of an SST-2 TSV (a stated, deterministic subset) as id,text CSV, in file order."""
    with open(src, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    keep = list(range(len(rows)))
    if size and size < len(rows):
        step = len(rows) / size
        keep = [int(i * step) for i in range(size)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "text"])
        for i in keep:
            out.writerow([f"{prefix}{i:06d}", rows[i][text_column]])
    return len(keep)


def build(train: Path, dev: Path) -> dict:
    run([SCONS, "-Q", f"target={PROFILE}", f"data={train}", f"eval_data={dev}"], cwd=ROOT,
        env=dict(os.environ, PYTHONWARNINGS="ignore"))
    return json.loads((ROOT / "build" / TARGET / "report.json").read_text(encoding="utf-8"))


def st_python(venv: str) -> Path:
    return ST_VENVS[venv] / "bin" / "python"


def peer_variants(model_dir: Path, calib: Path) -> dict:
    """sentence-transformers' variants of the model, from each of its venvs (run_st.py export)."""
    run(["bash", ST_DIR / "setup_venv.sh"], cwd=ROOT)
    for venv in ST_VENVS:
        if st_python(venv).exists():
            run([st_python(venv), ST_DIR / "run_st.py", "export", "--model", model_dir, "--work", WORK / "st",
                 "--calib-texts", calib], cwd=ROOT)
    return json.loads((WORK / "st" / "variants.json").read_text(encoding="utf-8"))["variants"]


def venv_of(variant: dict) -> str:
    return variant.get("venv") or ("st-onnx" if variant.get("backend") == "onnx" else "st")


def one_process(cmd: list) -> dict:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ours_cmd(bundle: Path, name: str, texts: Path, threads: int, out: Path | None, timed: bool, repeats: int) -> list:
    cmd = [sys.executable, ROOT / "bench" / "embedding_time.py", "--bundle", bundle, "--artifact", name, "--texts", texts,
           "--threads", threads]
    if out:
        cmd += ["--out", out]
    if timed:
        cmd += ["--time-batches", ",".join(map(str, BATCHES)), "--repeats", repeats, "--warmup", 3]
    return cmd


def theirs_cmd(name: str, variant: dict, texts: Path, threads: int, out: Path, timed: bool, repeats: int) -> list:
    cmd = [st_python(venv_of(variant)), ST_DIR / "run_st.py", "encode", "--work", WORK / "st", "--variant", name,
           "--texts", texts, "--threads", threads, "--out", out]
    if timed:
        cmd += ["--time-batches", ",".join(map(str, BATCHES)), "--repeats", repeats, "--warmup", 3]
    return cmd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "sst2"))
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-build", action="store_true", help="reuse the last build's report")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite bench/results/embedding.md from embedding.json (and the peers' variants.json)")
    args = parser.parse_args()
    if args.render_only:
        results_json = ROOT / "bench" / "results" / "embedding.json"
        res = json.loads(results_json.read_text())
        res["peer_variants"] = peer_record(json.loads((WORK / "st" / "variants.json").read_text())["variants"])
        results_json.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
        (ROOT / "bench" / "results" / "embedding.md").write_text(render(res))
        return 0
    import numpy as np

    from recipes.inputs.checkpoint import default_model_dir
    from recipes.measure.embedding_metrics import compare

    data = Path(args.data_dir)
    train, dev = WORK / "train.csv", WORK / "dev.csv"
    # (SST-2's train file names its text column "sentence", its dev file "content".)
    n_train = write_texts(data / "train.tsv", train, "sentence", args.train_size, "train")
    n_dev = write_texts(data / "dev.tsv", dev, "content", None, "dev")
    report = json.loads((ROOT / "build" / TARGET / "report.json").read_text()) if args.skip_build else \
        build(train, dev)
    inputs = report["inputs"]
    teacher = np.load(Path(inputs["teacher_eval_dir"]) / "logits.npy")
    # The eval texts in the order the teacher's vectors are in (eval.jsonl, sorted by id = file order here).
    eval_texts = [json.loads(line)["text"] for line in (Path(inputs["data_dir"]) / "eval.jsonl").read_text().splitlines()]
    corpus = WORK / "eval_texts.txt"
    corpus.write_text("\n".join(eval_texts) + "\n", encoding="utf-8")
    timing_texts = WORK / "timing_texts.txt"
    timing_texts.write_text("\n".join(eval_texts[:32]) + "\n", encoding="utf-8")
    calib = WORK / "calibration_texts.txt"
    with open(train, newline="", encoding="utf-8") as fh:
        calib.write_text("\n".join(r["text"] for r in csv.DictReader(fh)) + "\n", encoding="utf-8")

    bundle = ROOT / "build" / TARGET / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    from runtime.cpu_features import host_features, lacking

    ours = {}
    for a in manifest["artifacts"]:
        problem = lacking(a.get("requires_cpu_any") or [], host_features(), a.get("requires_why", ""))
        ours[a["name"]] = {"format": a["format"], "precision": a["precision"], "runs_here": problem is None,
                           "why_not": problem}
    peers = peer_variants(default_model_dir(), calib)
    made = {n: v for n, v in peers.items() if v.get("ok")}

    rows: dict[str, dict] = {}
    for name, r in ((r["name"], r) for r in report["artifacts"]):
        rows[name] = {"side": "edgesmith", "cosine_mean": r.get("cosine_mean"), "cosine_p1": r.get("cosine_p1"),
                      "recall_at_10": r.get("recall_at_10"), "size_bytes": r["size_bytes"],
                      "format": r["format"], "precision": r["precision"], "note": r.get("note", "")}
    # The teacher is sentence-transformers' own PyTorch model: check that our teacher's vectors are its vectors.
    for name, v in made.items():
        out = WORK / "vectors" / f"{name}.npy"
        out.parent.mkdir(parents=True, exist_ok=True)
        one_process(theirs_cmd(name, v, corpus, args.threads, out, False, 0))
        vectors = np.load(out)
        rows[name] = {"side": "sentence-transformers", **compare(vectors, teacher), "size_bytes": v.get("model_bytes"),
                      "format": v.get("backend"), "precision": "int8" if "int8" in name else "fp32",
                      "note": v.get("recipe", "")}
    rows["teacher"]["note"] = ("edgesmith's PyTorch teacher; st_torch's vectors against it: cosine "
                               f"{rows['st_torch']['cosine_mean']:.6f}" if "st_torch" in rows else "")

    # Latency: every variant in its own process, in alternating rounds.
    timed = [("edgesmith", n) for n, o in ours.items() if o["runs_here"]] + [("st", n) for n in made]
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in BATCHES} for _, n in timed}
    for round_no in range(args.rounds):
        for side, name in (timed if round_no % 2 == 0 else list(reversed(timed))):
            cmd = (ours_cmd(bundle, name, timing_texts, args.threads, None, True, args.repeats) if side == "edgesmith"
                   else theirs_cmd(name, made[name], timing_texts, args.threads, WORK / "vectors" / "timing.npy", True,
                                   args.repeats))
            result = one_process(cmd)
            for t in result["timings"]:
                samples[name][t["batch"]].append(t["median_ms"])
            print(f"round {round_no + 1}: {name} {[(t['batch'], t['median_ms']) for t in result['timings']]}", flush=True)
    for name, by_batch in samples.items():
        rows[name]["latency_ms"] = {str(b): round(statistics.median(v), 3) for b, v in by_batch.items() if v}
        rows[name]["latency_rounds_ms"] = {str(b): v for b, v in by_batch.items()}
    for name, o in ours.items():
        if not o["runs_here"]:
            rows[name]["note"] = "; ".join(x for x in (rows[name]["note"], f"not timed here: {o['why_not']}") if x)

    results = summarise(rows, report, n_train, n_dev, args, peers)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "embedding.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (ROOT / "bench" / "results" / "embedding.md").write_text(render(results))
    print((ROOT / "bench" / "results" / "embedding.md").read_text())
    return 0


def summarise(rows: dict, report: dict, n_train: int, n_dev: int, args, peers: dict) -> dict:
    """The results record, with the issue's targets checked."""
    st_int8 = {n: r for n, r in rows.items() if r["side"] == "sentence-transformers" and "int8" in n and r.get("latency_ms")}
    ours_int8 = {n: r for n, r in rows.items() if r["side"] == "edgesmith" and r["precision"] == "int8" and r.get("latency_ms")}
    targets = []
    for name, r in sorted(ours_int8.items()):
        keeps = r["recall_at_10"] >= 0.95 and r["cosine_mean"] >= 0.99
        targets.append({"target": f"{name} keeps recall@10 >= 0.95 and mean cosine >= 0.99",
                        "value": f"recall@10 {r['recall_at_10']:.4f}, cosine {r['cosine_mean']:.4f}", "met": keeps})
        rivals = {n: p for n, p in st_int8.items() if p["recall_at_10"] <= r["recall_at_10"]}
        if rivals:
            for b in ("1", "32"):
                fastest = min(rivals, key=lambda n: rivals[n]["latency_ms"][b])
                ratio = r["latency_ms"][b] / rivals[fastest]["latency_ms"][b]
                targets.append({"target": f"{name} at most 0.9x the latency of sentence-transformers' fastest int8 at "
                                          f"equal or lower recall (batch {b})",
                                "value": f"{ratio:.3f}x {fastest}", "met": ratio <= 0.9})
        else:
            targets.append({"target": f"{name} at most 0.9x the latency of sentence-transformers' fastest int8 at equal "
                                      "or better recall", "value": "no sentence-transformers int8 variant at or below its recall",
                            "met": None})
    targets.append({"target": "a 3-layer distilled student keeps recall@10 >= 0.85 at >= 1.8x the teacher's speed",
                    "value": "not measured: distillation of embedding models is not built yet", "met": None})
    versions = {p: package_version(p) for p in ("torch", "transformers", "onnxruntime", "openvino", "nncf", "sentence-transformers")}
    return {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
            "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats,
            "data": {"train_texts": n_train, "eval_texts": n_dev, "source": "SST-2 train (every k-th) and dev, texts only"},
            "edgesmith_versions": versions,
            "peer_variants": peer_record(peers),
            "rows": rows, "targets": targets, "report": {"target": report["target"], "eval_examples": report["eval_examples"]}}


def peer_record(peers: dict) -> dict:
    """What made each peer variant: its venv and its sentence-transformers and transformers versions (no paths)."""
    out = {}
    for name, v in peers.items():
        made = v.get("made_by") or {}
        out[name] = {"ok": v.get("ok"), "reason": v.get("reason"), "backend": v.get("backend"), "recipe": v.get("recipe"),
                     "venv": v.get("venv"), "sentence_transformers": made.get("sentence-transformers"),
                     "transformers": made.get("transformers")}
    return out


def fastest_lines(rows: dict) -> list[str]:
    """Per precision and batch: each side's fastest timed variant, its recall@10, and who wins."""
    out = []
    for precision in ("fp32", "int8"):
        for b in ("1", "32"):
            best = {}
            for side in ("edgesmith", "sentence-transformers"):
                timed = {n: r for n, r in rows.items() if r["side"] == side and r["precision"] == precision
                         and (r.get("latency_ms") or {}).get(b)}
                if timed:
                    best[side] = min(timed, key=lambda n: timed[n]["latency_ms"][b])
            if len(best) < 2:
                continue
            ours, theirs = rows[best["edgesmith"]], rows[best["sentence-transformers"]]
            ratio = ours["latency_ms"][b] / theirs["latency_ms"][b]
            out.append(f"- {precision}, batch {b}: edgesmith {best['edgesmith']} {ours['latency_ms'][b]:.2f} ms "
                       f"(recall@10 {ours['recall_at_10']:.4f}) vs {best['sentence-transformers']} "
                       f"{theirs['latency_ms'][b]:.2f} ms (recall@10 {theirs['recall_at_10']:.4f}): {ratio:.3f}x, "
                       f"{'edgesmith' if ratio < 1 else 'sentence-transformers'} faster")
    return out


def _f(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def render(res: dict) -> str:
    lines = ["# Sentence embeddings: edgesmith vs sentence-transformers (all-MiniLM-L6-v2, SST-2 texts)", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, Python {res['machine']['python']}; "
             f"{res['threads']} threads for every runtime. Eval corpus: {res['data']['eval_texts']} SST-2 dev sentences "
             f"(calibration: {res['data']['train_texts']} train sentences), texts only. Cosine and recall@10 are "
             "measured against edgesmith's PyTorch teacher (sentence-transformers' own model, loaded by edgesmith) "
             "with one code (recipes/measure/embedding_metrics.py). Latency: `embed`/`encode` of the same first 32 "
             f"eval texts (batch 32) or the first one (batch 1), tokenization included, each variant in its own "
             f"process, {res['rounds']} alternating rounds of {res['repeats']} timed calls; the median over rounds "
             "of each process's median.", "",
             "| variant | side | format | precision | cosine mean | cosine p1 | recall@10 | size MB | b1 ms | b32 ms | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["rows"].items():
        lat = r.get("latency_ms") or {}
        lines.append(f"| {name} | {r['side']} | {r['format']} | {r['precision']} | {_f(r.get('cosine_mean'), '.5f')} | "
                     f"{_f(r.get('cosine_p1'), '.5f')} | {_f(r.get('recall_at_10'), '.4f')} | "
                     f"{_f(r['size_bytes'] / 1e6 if r.get('size_bytes') else None, '.1f')} | {_f(lat.get('1'), '.2f')} | "
                     f"{_f(lat.get('32'), '.1f')} | {r.get('note') or ''} |")
    lines += ["", "## Fastest of each side, by precision", ""] + fastest_lines(res["rows"])
    lines += ["", "## Targets (issue 14)", ""]
    for t in res["targets"]:
        mark = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
        lines.append(f"- {t['target']}: {t['value']} ({mark})")
    lines += ["", "## Peers", "",
              "sentence-transformers 6.2's ONNX backend cannot be installed beside it (every optimum-onnx pins "
              "transformers<4.58, sentence-transformers 6.2 needs 5.x), so its ONNX recipes ran from "
              "sentence-transformers 5.7 in a second venv (bench/sentence_transformers/README.md):", ""]
    lines += [f"- {n}: sentence-transformers {v.get('sentence_transformers')}, transformers {v.get('transformers')} "
              f"(bench/.venv-{v.get('venv')}); {v.get('recipe')}" for n, v in res["peer_variants"].items() if v.get("ok")]
    missing = {n: v["reason"] for n, v in res["peer_variants"].items() if not v.get("ok")}
    if missing:
        lines += ["", "## Peer variants not made", ""] + [f"- {n}: {why}" for n, why in missing.items()]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in res["edgesmith_versions"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
