#!/usr/bin/env python3
"""sentence-transformers "peer" for the sentence-embedding benchmark (two venvs).

Run with the venv that makes the variant (bench/sentence_transformers/setup_venv.sh sets up both):

    bench/.venv-st/bin/python       ... ST 6.2: st_torch, st_openvino, st_openvino_int8
    bench/.venv-st-onnx/bin/python  ... ST 5.7: st_onnx, st_onnx_o3, st_onnx_int8

    PY run_st.py export --model DIR --work WORK [--variants auto|all|a,b] [--qconfig avx2]
                        [--calib-texts FILE] [--calib-samples 300]
    PY run_st.py encode --work WORK --variant NAME --texts FILE --threads N --out EMB.npy
                        [--time-batches 1,32 --repeats R --warmup W]

`export` makes ST's own variants of a local Sentence Transformers model directory, each in
WORK/<variant>/, and merges them into WORK/variants.json (files, sizes, how to load each, which
venv / ST version made it, or why a variant could not be made). With `--variants auto` (the
default) a venv makes only the variants whose backend it has, so running `export` once with each
interpreter fills variants.json; entries made by the other venv are kept. `encode` loads one
variant in this process exactly as ST's docs say (SentenceTransformer(dir, backend=...,
model_kwargs=...)), writes float32 [n, d] embeddings and prints ONE JSON line on stdout
(everything else goes to stderr). It refuses a variant made by another ST version (other venv).

Nothing is fetched from the Hugging Face hub: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are
forced and every load uses local_files_only=True; HF_HOME defaults to WORK/.hf_home so no
cache is written outside WORK.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("st_torch", "st_onnx", "st_onnx_o3", "st_onnx_int8", "st_openvino", "st_openvino_int8")
# Which venv makes which variants (--variants auto picks by the backend packages present).
ST_GROUP = ("st_torch", "st_openvino", "st_openvino_int8")  # bench/.venv-st (ST 6.2, optimum-intel)
ONNX_GROUP = ("st_onnx", "st_onnx_o3", "st_onnx_int8")  # bench/.venv-st-onnx (ST 5.7, optimum-onnx)
# The Optimum package each backend needs, and why it may be missing from a venv.
BACKEND_MODULE = {"onnx": "optimum.onnxruntime", "openvino": "optimum.intel"}
BACKEND_MISSING = {
    "onnx": ("sentence-transformers[onnx]==6.2 does not resolve (ST 6.2 needs transformers>=5; every optimum-onnx on "
             "PyPI, <=0.1.0, pins transformers<4.58): make it with bench/.venv-st-onnx (ST 5.7)"),
    "openvino": "make it with bench/.venv-st (ST 6.2, optimum-intel)",
}
QCONFIGS = ("arm64", "avx2", "avx512", "avx512_vnni")  # export_dynamic_quantized_onnx_model names (ST 5.7 and 6.2)
CHECK_TEXTS = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A man is playing a guitar on stage.",
]


def log(*a) -> None:
    print("run_st:", *a, file=sys.stderr, flush=True)


def offline_env(work: Path) -> None:
    """Must run before transformers / datasets / huggingface_hub are imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HOME", str(work / ".hf_home"))
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}"[:400]


def versions() -> dict:
    from importlib import metadata

    out = {"python": "%d.%d.%d" % sys.version_info[:3]}
    for dist in ("sentence-transformers", "transformers", "torch", "optimum", "optimum-onnx",
                 "optimum-intel", "onnxruntime", "onnx", "openvino", "nncf", "tokenizers", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def venv_label() -> str:
    """Short name of this interpreter's venv: bench/.venv-st -> "st", bench/.venv-st-onnx -> "st-onnx"."""
    name = Path(sys.prefix).name
    return name[len(".venv-"):] if name.startswith(".venv-") else name


def made_by() -> dict:
    from importlib import metadata

    out = {"venv": venv_label(), "prefix": sys.prefix, "python": os.path.abspath(sys.executable)}
    for dist in ("sentence-transformers", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def auto_variants() -> list[str]:
    """The variants this venv can make: its backends decide (optimum-intel -> ST_GROUP, optimum-onnx -> ONNX_GROUP)."""
    want = []
    if has_module("optimum.intel"):
        want += ST_GROUP
    if has_module("optimum.onnxruntime"):
        want += ONNX_GROUP
    return [v for v in VARIANTS if v in want] or ["st_torch"]


def dir_files(d: Path) -> list[dict]:
    return [{"path": p.relative_to(d).as_posix(), "bytes": p.stat().st_size}
            for p in sorted(d.rglob("*")) if p.is_file()]


def model_file_bytes(d: Path, spec: dict) -> int:
    """Bytes of the backend's network file(s) alone (no tokenizer / configs)."""
    if spec["backend"] == "torch":
        return sum(p.stat().st_size for p in d.glob("*.safetensors")) + sum(
            p.stat().st_size for p in d.glob("pytorch_model.bin"))
    f = d / spec["model_kwargs"]["file_name"]
    extra = [f.with_suffix(".bin")] if spec["backend"] == "openvino" else list(f.parent.glob(f.name + "_data"))
    return sum(p.stat().st_size for p in [f, *extra] if p.exists())


def load(path: Path, spec: dict, extra_model_kwargs: dict | None = None):
    """Load a variant the way ST's docs do it."""
    from sentence_transformers import SentenceTransformer

    kw = dict(spec.get("model_kwargs") or {})
    kw.update(extra_model_kwargs or {})
    return SentenceTransformer(str(path), device="cpu", backend=spec["backend"],
                               local_files_only=True, model_kwargs=kw or None)


# --------------------------------------------------------------------------- export

def parse_variants(arg: str) -> list[str]:
    if arg == "auto":
        return auto_variants()
    if arg == "all":
        return list(VARIANTS)
    names = [x.strip() for x in arg.split(",") if x.strip()]
    bad = [n for n in names if n not in VARIANTS]
    if bad or not names:
        raise SystemExit(f"run_st: --variants: unknown {bad or arg!r}; choose from {', '.join(VARIANTS)}, auto, all")
    return [v for v in VARIANTS if v in names]


def read_variants(work: Path, src: Path) -> dict:
    """The variants.json already in WORK (made by this or the other venv), or an empty one."""
    path = work / "variants.json"
    if not path.is_file():
        return {"model": str(src), "work": str(work), "venvs": {}, "variants": {}}
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("model") != str(src):
        raise SystemExit(f"run_st: {path} is for model {doc.get('model')!r}, not {str(src)!r}; "
                         "use another --work or delete it")
    if "venvs" not in doc:  # written before variants recorded their venv (one venv, one "versions")
        doc["venvs"] = {}
        old = doc.pop("versions", None) or {}
        label = "st" if (old.get("sentence-transformers") or "").startswith("6.") else "?"
        if old:
            doc["venvs"][label] = {"venv": label, "versions": old}
        for rec in doc["variants"].values():
            rec.setdefault("venv", label)
            rec.setdefault("made_by", {"venv": label, "sentence-transformers": old.get("sentence-transformers"),
                                       "transformers": old.get("transformers")})
        doc.pop("qconfig", None)
    return doc


def cmd_export(args) -> int:
    src = Path(args.model).resolve()
    work = Path(args.work).resolve()
    if not (src / "modules.json").is_file():
        log(f"{src} is not a Sentence Transformers model directory (no modules.json)")
        return 2
    if work == src or src in work.parents:
        log("--work must not be inside --model")
        return 2
    want = parse_variants(args.variants)
    work.mkdir(parents=True, exist_ok=True)
    offline_env(work)
    doc = read_variants(work, src)
    prior = doc["variants"]  # kept for every variant this run does not make
    me = made_by()
    log(f"venv {me['venv']!r} (sentence-transformers {me['sentence-transformers']}, transformers "
        f"{me['transformers']}): making {want}")

    import numpy as np

    # Pristine copy: ST/Optimum export from here, never from the package directory. Per run, so
    # the two venvs' exports do not share it (they still must not run at the same time: variants.json).
    scratch = Path(tempfile.mkdtemp(prefix="_src.", dir=work)) / "model"
    shutil.copytree(src, scratch)

    results: dict[str, dict] = {}
    ref = None  # torch-backend embeddings of CHECK_TEXTS (st_torch, or the same model in this venv)
    ref_desc = None

    def available(name: str) -> dict | None:
        """A parent variant made by this run or, if made by this same ST version, an earlier one."""
        r = results.get(name)
        if r is None:
            r = prior.get(name)
            if r and (r.get("made_by") or {}).get("sentence-transformers") != me["sentence-transformers"]:
                return None
        return r if r and r.get("ok") else None

    def record(name: str, spec: dict, make, t0: float) -> None:
        nonlocal ref, ref_desc
        d = work / name
        try:
            if d.exists():
                shutil.rmtree(d)
            make(d)
            m = load(d, spec)  # load back exactly as `encode` will
            emb = m.encode(CHECK_TEXTS, batch_size=32, show_progress_bar=False)
            if name == "st_torch":
                ref, ref_desc = emb, "st_torch"
            cos = float(np.min(np.sum(emb * ref, axis=1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1)))) if ref is not None else None
            files = dir_files(d)
            results[name] = {
                "ok": True, "dir": str(d), "backend": spec["backend"], "model_kwargs": spec.get("model_kwargs") or {},
                "recipe": spec["recipe"], "venv": me["venv"], "made_by": me, "files": files,
                "total_bytes": sum(f["bytes"] for f in files), "model_bytes": model_file_bytes(d, spec),
                "export_s": round(time.perf_counter() - t0, 2),
                "check_min_cos_vs_st_torch": None if cos is None else round(cos, 6), "check_ref": ref_desc,
            }
            results[name].update(spec.get("extra") or {})
            log(f"{name}: ok, {results[name]['total_bytes']} bytes, {results[name]['export_s']} s, min cos {cos}")
        except Exception as exc:  # noqa: BLE001 - a variant that cannot be made is recorded, not fatal
            shutil.rmtree(d, ignore_errors=True)
            results[name] = {"ok": False, "backend": spec["backend"], "recipe": spec["recipe"], "venv": me["venv"],
                             "made_by": me, "reason": one_line(exc)}
            log(f"{name}: NOT MADE: {results[name]['reason']}")

    def skip(name: str, backend: str, recipe: str, reason: str) -> None:
        results[name] = {"ok": False, "backend": backend, "recipe": recipe, "venv": me["venv"], "made_by": me,
                         "reason": reason}
        log(f"{name}: NOT MADE: {reason}")

    def lacks_backend(name: str, backend: str, recipe: str) -> bool:
        """True (and nothing touched) when this venv cannot make `name`: a forced variant of the other venv.
        Its directory and an ok entry made by the other venv are kept; only a missing entry becomes "not made"."""
        module = BACKEND_MODULE.get(backend)
        if module is None or has_module(module):
            return False
        if (prior.get(name) or {}).get("ok"):
            log(f"{name}: not made here ({module} is not installed in this venv); kept the entry made by "
                f"venv {prior[name].get('venv')!r}")
        else:
            skip(name, backend, recipe, f"{module} is not installed in this venv ({sys.prefix}); "
                 + BACKEND_MISSING.get(backend, ""))
        return True

    try:
        # 1. st_torch: the model as shipped, plain PyTorch backend.
        if "st_torch" in want:
            def make_torch(d: Path) -> None:
                shutil.copytree(scratch, d)
            record("st_torch", {"backend": "torch", "recipe": "SentenceTransformer(dir) (copy of --model)"},
                   make_torch, time.perf_counter())
            if not results["st_torch"]["ok"]:
                log("st_torch failed; nothing else to compare against")
                return 1
        else:
            # Reference for the load-back check: the same model on the torch backend, in this venv.
            ref = load(scratch, {"backend": "torch"}).encode(CHECK_TEXTS, batch_size=32, show_progress_bar=False)
            ref_desc = f"--model on the torch backend in this venv (sentence-transformers {me['sentence-transformers']})"

        # 2. st_onnx: SentenceTransformer(dir, backend="onnx") exports with Optimum on load, then
        #    model.save_pretrained(dir) writes onnx/model.onnx (ST docs, "Exporting" section).
        recipe = 'SentenceTransformer(dir, backend="onnx") + save_pretrained'
        if "st_onnx" in want and not lacks_backend("st_onnx", "onnx", recipe):
            def make_onnx(d: Path) -> None:
                m = load(scratch, {"backend": "onnx"})
                m.save_pretrained(str(d))
            record("st_onnx", {"backend": "onnx", "model_kwargs": {"file_name": "onnx/model.onnx"}, "recipe": recipe},
                   make_onnx, time.perf_counter())

        # 3./4. Optimized / dynamically quantized ONNX from st_onnx, with ST's helpers. Each goes to its
        #       own copy of st_onnx; the fp32 onnx/model.onnx is then removed from that copy so the
        #       variant holds only the file it loads.
        def onnx_derived(name: str, fn_name: str, config, recipe: str, extra: dict | None = None) -> None:
            if name not in want or lacks_backend(name, "onnx", recipe):
                return
            if not available("st_onnx"):
                skip(name, "onnx", recipe, "needs st_onnx made by this venv, which is not there (see its reason)")
                return
            t0 = time.perf_counter()
            spec = {"backend": "onnx", "recipe": recipe, "model_kwargs": {}, "extra": extra}

            def make(d: Path) -> None:
                import sentence_transformers as st_mod

                shutil.copytree(work / "st_onnx", d)
                before = {p.name for p in (d / "onnx").glob("*.onnx")}
                m = load(work / "st_onnx", {"backend": "onnx", "model_kwargs": {"file_name": "onnx/model.onnx"}})
                getattr(st_mod, fn_name)(m, config, str(d))
                new = sorted({p.name for p in (d / "onnx").glob("*.onnx")} - before)
                if len(new) != 1:
                    raise RuntimeError(f"{fn_name} wrote {new}, expected one new .onnx file")
                (d / "onnx" / "model.onnx").unlink()
                spec["model_kwargs"] = {"file_name": f"onnx/{new[0]}"}
            record(name, spec, make, t0)

        onnx_derived("st_onnx_o3", "export_optimized_onnx_model", "O3",
                     'export_optimized_onnx_model(model, "O3", dir)')
        onnx_derived("st_onnx_int8", "export_dynamic_quantized_onnx_model", args.qconfig,
                     f'export_dynamic_quantized_onnx_model(model, "{args.qconfig}", dir)', {"qconfig": args.qconfig})

        # 5. st_openvino: SentenceTransformer(dir, backend="openvino") exports on load, then
        #    save_pretrained writes openvino/openvino_model.xml/.bin.
        recipe = 'SentenceTransformer(dir, backend="openvino") + save_pretrained'
        if "st_openvino" in want and not lacks_backend("st_openvino", "openvino", recipe):
            def make_ov(d: Path) -> None:
                m = load(scratch, {"backend": "openvino"})
                m.save_pretrained(str(d))
            record("st_openvino", {"backend": "openvino", "model_kwargs": {"file_name": "openvino/openvino_model.xml"},
                                   "recipe": recipe},
                   make_ov, time.perf_counter())

        # 6. st_openvino_int8: export_static_quantized_openvino_model (NNCF post-training static int8).
        #    Its calibration set defaults to glue/sst2 from the hub; here dataset_name points at a
        #    local folder holding train.jsonl built from --calib-texts (datasets.load_dataset reads it
        #    offline; ST passes name="default", split="train", column "sentence").
        recipe = ("export_static_quantized_openvino_model(model, OVQuantizationConfig(num_samples=N), dir, "
                  "dataset_name=<local jsonl dir from --calib-texts>, 'default', 'train', 'sentence')")
        if "st_openvino_int8" not in want or lacks_backend("st_openvino_int8", "openvino", recipe):
            pass
        elif not available("st_openvino"):
            skip("st_openvino_int8", "openvino", recipe,
                 "needs st_openvino made by this venv, which is not there (see its reason)")
        elif not args.calib_texts:
            skip("st_openvino_int8", "openvino", recipe,
                 "no --calib-texts given (ST's default calibration set, glue/sst2, is on the hub)")
        else:
            calib_lines = [t for t in Path(args.calib_texts).read_text(encoding="utf-8").splitlines() if t.strip()]
            calib_dir = work / "_calib"
            calib_dir.mkdir(exist_ok=True)
            with open(calib_dir / "train.jsonl", "w", encoding="utf-8") as f:
                for t in calib_lines:
                    f.write(json.dumps({"sentence": t}, ensure_ascii=False) + "\n")
            n = min(args.calib_samples, len(calib_lines))
            calibration = {"texts": str(Path(args.calib_texts).resolve()), "lines": len(calib_lines), "num_samples": n}
            spec = {"backend": "openvino", "model_kwargs": {"file_name": "openvino/openvino_model_qint8_quantized.xml"},
                    "recipe": recipe.replace("N)", f"{n})"), "extra": {"calibration": calibration}}

            def make_ov_int8(d: Path) -> None:
                from optimum.intel import OVQuantizationConfig
                from sentence_transformers import export_static_quantized_openvino_model

                shutil.copytree(work / "st_openvino", d)
                m = load(work / "st_openvino", {"backend": "openvino",
                                                "model_kwargs": {"file_name": "openvino/openvino_model.xml"}})
                export_static_quantized_openvino_model(
                    m, OVQuantizationConfig(num_samples=n), str(d),
                    dataset_name=str(calib_dir), dataset_config_name="default", dataset_split="train",
                    column_name="sentence")
                for suffix in (".xml", ".bin"):
                    (d / "openvino" / f"openvino_model{suffix}").unlink()
            record("st_openvino_int8", spec, make_ov_int8, time.perf_counter())
    finally:
        shutil.rmtree(scratch.parent, ignore_errors=True)
        write_variants(work, doc, me, results)

    made = [k for k in VARIANTS if results.get(k, {}).get("ok")]
    log(f"made {made}; wrote {work / 'variants.json'}")
    return 0


def write_variants(work: Path, doc: dict, me: dict, results: dict) -> None:
    """Merge this run's variants into WORK/variants.json; the other venv's entries are kept as they were."""
    merged = {**doc["variants"], **results}
    doc["variants"] = {k: merged[k] for k in VARIANTS if k in merged}
    doc["venvs"][me["venv"]] = {**me, "versions": versions()}
    tmp = work / "variants.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(work / "variants.json")


# --------------------------------------------------------------------------- encode

def cmd_encode(args) -> int:
    n_threads = args.threads
    # Thread knobs that must be set before numpy / torch / tokenizers start their pools:
    # OMP (torch's intra-op pool and ORT/OpenVINO builds that use OpenMP), MKL, and RAYON for the
    # HF fast tokenizer's batch encoding (it otherwise uses every core).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(n_threads)
    work = Path(args.work).resolve()
    offline_env(work)

    # Only the JSON line may reach stdout: send fd 1 (Python and C-level writes alike) to stderr
    # until the end.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)

    doc = json.loads((work / "variants.json").read_text(encoding="utf-8"))
    v = doc["variants"].get(args.variant)
    maker = "bench/.venv-st-onnx" if args.variant in ONNX_GROUP else "bench/.venv-st"
    if v is None or not v.get("ok"):
        log(f"variant {args.variant!r} not available: "
            f"{v.get('reason') if v else f'not in variants.json (run export with {maker}/bin/python)'}")
        return 2
    # Encode with the venv (sentence-transformers version) that made the variant.
    me, by = made_by(), v.get("made_by") or {}
    if by.get("sentence-transformers") and by["sentence-transformers"] != me["sentence-transformers"] and not args.any_venv:
        log(f"variant {args.variant!r} was made by sentence-transformers {by['sentence-transformers']} "
            f"({by.get('python') or 'venv ' + str(by.get('venv'))}); this is {me['sentence-transformers']} ({me['python']}). "
            "Run encode with that interpreter (or pass --any-venv).")
        return 2

    import numpy as np
    import torch

    # torch: intra-op threads for the torch backend; ST also pools/normalizes in torch for the others.
    torch.set_num_threads(n_threads)
    knobs = {"env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")},
             "torch.set_num_threads": n_threads}
    extra: dict = {}
    if v["backend"] == "onnx":
        # ONNX Runtime: ST forwards model_kwargs to Optimum's ORTModel.from_pretrained, which takes
        # `session_options` (an onnxruntime.SessionOptions) and `provider`.
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = n_threads
        so.inter_op_num_threads = 1
        extra = {"provider": "CPUExecutionProvider", "session_options": so}
        knobs["model_kwargs"] = {"provider": "CPUExecutionProvider",
                                 "session_options": {"intra_op_num_threads": n_threads, "inter_op_num_threads": 1}}
    elif v["backend"] == "openvino":
        # OpenVINO: ST forwards model_kwargs["ov_config"] to OVModel.from_pretrained, which compiles
        # with it (optimum-intel adds PERFORMANCE_HINT=LATENCY when not given).
        extra = {"ov_config": {"INFERENCE_NUM_THREADS": n_threads}}
        knobs["model_kwargs"] = extra

    texts = Path(args.texts).read_text(encoding="utf-8").splitlines()
    if not texts:
        log(f"{args.texts} has no lines")
        return 2

    t0 = time.perf_counter()
    import sentence_transformers  # noqa: F401  (import cost kept out of load_s)
    if v["backend"] == "openvino":
        import optimum.intel.openvino  # noqa: F401
    import_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = load(Path(v["dir"]), v, extra)
    load_s = time.perf_counter() - t0
    module_types = [type(m).__name__ for m in model]
    knobs["effective"] = effective_threads(model, v["backend"])

    t0 = time.perf_counter()
    # The model's own pipeline (Transformer -> Pooling -> Normalize) decides normalization.
    emb = model.encode(texts, batch_size=32, show_progress_bar=False, convert_to_numpy=True)
    encode_all_s = time.perf_counter() - t0
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb)

    result = {
        "variant": args.variant, "backend": v["backend"], "model_kwargs": v.get("model_kwargs", {}),
        "venv": me["venv"], "made_by": by,
        "threads": n_threads, "thread_knobs": knobs, "n_texts": len(texts), "dim": int(emb.shape[1]),
        "modules": module_types, "mean_norm": round(float(np.linalg.norm(emb, axis=1).mean()), 6),
        "out": str(out.resolve()), "import_s": round(import_s, 4), "load_s": round(load_s, 4), "encode_all_s": round(encode_all_s, 4),
        "encode_all_batch_size": 32, "timings": [], "versions": versions(),
    }

    if args.time_batches:
        for b in [int(x) for x in args.time_batches.split(",") if x.strip()]:
            batch = (texts * (b // len(texts) + 1))[:b]
            for _ in range(args.warmup):
                model.encode(batch, batch_size=b, show_progress_bar=False)
            ms = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                model.encode(batch, batch_size=b, show_progress_bar=False)
                ms.append((time.perf_counter() - t) * 1e3)
            result["timings"].append({
                "batch": b, "repeats": args.repeats, "warmup": args.warmup,
                "median_ms": round(float(np.median(ms)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
                "min_ms": round(min(ms), 3),
            })

    sys.stdout.flush()
    os.dup2(real_stdout, 1)
    os.close(real_stdout)
    print(json.dumps(result), flush=True)
    return 0


def effective_threads(model, backend: str) -> dict:
    """Read the thread settings back from the loaded runtime (best effort)."""
    import torch

    out: dict = {"torch.get_num_threads": torch.get_num_threads()}
    try:
        inner = model.transformers_model
        if backend == "openvino":
            # OVModel.request is the ov.CompiledModel after compile()
            out["ov.INFERENCE_NUM_THREADS"] = int(inner.request.get_property("INFERENCE_NUM_THREADS"))
            out["ov.PERFORMANCE_HINT"] = str(inner.request.get_property("PERFORMANCE_HINT"))
            out["ov.NUM_STREAMS"] = str(inner.request.get_property("NUM_STREAMS"))
        elif backend == "onnx":
            # optimum-onnx's ORTModel keeps the onnxruntime.InferenceSession as `.session` (older Optimum: `.model`)
            sess = getattr(inner, "session", None) or inner.model
            so = sess.get_session_options()
            out["ort.providers"] = sess.get_providers()
            out["ort.intra_op_num_threads"] = so.intra_op_num_threads
            out["ort.inter_op_num_threads"] = so.inter_op_num_threads
    except Exception as exc:  # noqa: BLE001
        out["error"] = one_line(exc)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("export", help="make ST's own variants under --work, write variants.json")
    e.add_argument("--model", required=True, help="local Sentence Transformers model dir (read only)")
    e.add_argument("--work", required=True, help="output dir (one subdir per variant)")
    e.add_argument("--variants", default="auto",
                   help="auto (default: what this venv's backends can make; .venv-st -> " + ",".join(ST_GROUP)
                        + "; .venv-st-onnx -> " + ",".join(ONNX_GROUP) + "), all, or a comma list. "
                        "Merged into an existing variants.json; other variants are kept.")
    e.add_argument("--qconfig", default="avx2", choices=QCONFIGS,
                   help="export_dynamic_quantized_onnx_model config for st_onnx_int8 (default avx2: AMD EPYC here, no avx512_vnni)")
    e.add_argument("--calib-texts", help="UTF-8 file, one text per line: calibration set for st_openvino_int8 "
                                         "(without it that variant is skipped; unused by the ONNX variants)")
    e.add_argument("--calib-samples", type=int, default=300, help="OVQuantizationConfig(num_samples=...)")
    e.set_defaults(fn=cmd_export)

    c = sub.add_parser("encode", help="encode a texts file with one variant; time model.encode")
    c.add_argument("--work", required=True)
    c.add_argument("--variant", required=True, choices=VARIANTS)
    c.add_argument("--texts", required=True, help="UTF-8, one text per line")
    c.add_argument("--threads", type=int, required=True)
    c.add_argument("--out", required=True, help=".npy for float32 [n, d] embeddings")
    c.add_argument("--time-batches", default="", help="comma list of batch sizes to time, e.g. 1,32")
    c.add_argument("--any-venv", action="store_true",
                   help="encode even if the variant was made by another sentence-transformers version")
    c.add_argument("--repeats", type=int, default=20)
    c.add_argument("--warmup", type=int, default=3)
    c.set_defaults(fn=cmd_encode)

    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
