#!/usr/bin/env python3
"""Times one LLaDA forward pass from Python: PyTorch eager and ONNX Runtime, in one process.

    python examples/bench/python_bench.py MODEL_DIR --threads N --lengths 64,256,1024 --repeats R --warmup W \
        --json OUT.json [--skip-torch] [--skip-ort] [--seed 0]

MODEL_DIR is a checkpoint directory (config.json + model.safetensors, and model.onnx for ONNX Runtime), e.g. the
output of examples/bench/make_bench_model.py. For each sequence length L the input is batch 1, no padding:
input_ids [1, L] drawn uniformly from 0 .. vocab-3 (seeded: the same ids for both engines), attention_mask all ones
(passed to both engines, so they compute the same graph). Each timed sample is one forward call, wall clock
(time.perf_counter), logits included (PyTorch: the float32 logits tensor; ONNX Runtime: session.run returning the
numpy logits). W untimed warm-up calls precede the R timed ones at every length.

Engines
- pytorch-eager: tests/fixtures/llada_torch.py's LLaDA loaded from model.safetensors as float32 (bf16 checkpoints
  are upcast), model.eval(), torch.set_num_threads(N), torch.set_num_interop_threads(1), torch.inference_mode().
- onnxruntime-python: MODEL_DIR/model.onnx, CPUExecutionProvider, intra_op_num_threads N, inter_op_num_threads 1,
  ORT_ENABLE_ALL, ORT_SEQUENTIAL; other session options at their defaults.
ONNX Runtime runs first and its session is released before PyTorch loads, so neither engine's idle worker threads
compete with the other's timings (and the two models are never in memory together).

Check: at the smallest length, the logits of both engines must agree within 1e-3 (max absolute difference);
the difference is recorded under "check". A failed check still writes the JSON, then exits with status 1.

JSON written to --json (also printed in summary form):
{
  "torch_version": str | null, "onnxruntime_version": str | null, "threads": N,
  "results": [{"engine": "pytorch-eager" | "onnxruntime-python", "seq_len": L, "median_s": float, "min_s": float,
               "samples": [float, ...]}, ...],
  "peak_rss_mb": float,                       # process peak resident set (VmHWM), MiB
  "check": {"seq_len": L, "max_abs_diff": float, "atol": 0.001, "passed": bool} | null (an engine skipped),
  "lengths": [...], "repeats": R, "warmup": W, "seed": S, "model_dir": str,
  "model": {"d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size", "n_params",
            "safetensors_dtype"},
  "load_s": {"pytorch-eager": float, "onnxruntime-python": float},   # model load / session creation
  "python_version": str, "numpy_version": str, "platform": str, "cpu_count": int, "timestamp": ISO-8601 UTC
}
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "fixtures"))
sys.path.insert(0, FIXTURES)

ATOL = 1e-3


def peak_rss_mb() -> float:
    """Peak resident set of this process, MiB.

    VmHWM is per address space, so it starts fresh at exec. ru_maxrss does not: when the
    parent starts us through vfork/posix_spawn, exec records the parent's high-water mark
    as ours, and the figure would be the Rust benchmark's peak instead of Python's.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # KiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_inputs(seq_len: int, n_ids: int, seed: int):
    rng = np.random.default_rng([seed, seq_len])
    ids = rng.integers(0, n_ids - 2, size=(1, seq_len), dtype=np.int64)
    return ids, np.ones((1, seq_len), dtype=np.int64)


def time_fn(fn, warmup: int, repeats: int):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def result(engine: str, seq_len: int, samples) -> dict:
    return {"engine": engine, "seq_len": seq_len, "median_s": statistics.median(samples), "min_s": min(samples),
            "samples": samples}


def safetensors_dtype(model_dir: str):
    path = os.path.join(model_dir, "model.safetensors")
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return sorted({v["dtype"] for k, v in header.items() if k != "__metadata__"})


def bench_ort(model_dir, lengths, inputs, threads, warmup, repeats, out):
    import onnxruntime as ort

    path = os.path.join(model_dir, "model.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    out["load_s"]["onnxruntime-python"] = time.perf_counter() - t0
    print(f"onnxruntime {ort.__version__}: session for {path} created in {out['load_s']['onnxruntime-python']:.2f}s",
          flush=True)
    results, ref = [], None
    for L in lengths:
        ids, mask = inputs[L]
        feed = {"input_ids": ids, "attention_mask": mask}
        samples = time_fn(lambda: sess.run(["logits"], feed), warmup, repeats)
        results.append(result("onnxruntime-python", L, samples))
        print(f"  onnxruntime-python seq {L:5d}: median {statistics.median(samples):.4f}s, min {min(samples):.4f}s",
              flush=True)
        if L == lengths[0]:
            ref = sess.run(["logits"], feed)[0]
    del sess
    gc.collect()
    return results, ref


def bench_torch(model_dir, lengths, inputs, threads, warmup, repeats, out):
    import torch

    import llada_torch as lt

    t0 = time.perf_counter()
    model = lt.load_model(model_dir).float().eval()
    out["load_s"]["pytorch-eager"] = time.perf_counter() - t0
    out["model"]["n_params"] = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}: {model_dir} loaded in {out['load_s']['pytorch-eager']:.2f}s "
          f"({torch.get_num_threads()} threads)", flush=True)
    results, ref = [], None
    with torch.inference_mode():
        for L in lengths:
            ids, mask = (torch.from_numpy(a) for a in inputs[L])
            samples = time_fn(lambda: model(ids, attention_mask=mask), warmup, repeats)
            results.append(result("pytorch-eager", L, samples))
            print(f"  pytorch-eager      seq {L:5d}: median {statistics.median(samples):.4f}s, "
                  f"min {min(samples):.4f}s", flush=True)
            if L == lengths[0]:
                ref = model(ids, attention_mask=mask).numpy()
    del model
    gc.collect()
    return results, ref


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--threads", type=int, required=True, help="intra-op threads for both engines")
    ap.add_argument("--lengths", default="64,256,1024", help="comma-separated sequence lengths")
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per engine and length (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per engine and length")
    ap.add_argument("--json", required=True, help="output JSON path")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random input ids")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-ort", action="store_true")
    args = ap.parse_args()

    if args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")
    try:
        lengths = sorted({int(x) for x in args.lengths.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--lengths: expected comma-separated integers, got {args.lengths!r}")
    if not lengths:
        ap.error("--lengths is empty")
    if args.skip_torch and args.skip_ort:
        ap.error("nothing to do: both --skip-torch and --skip-ort")

    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    max_len = cfg.get("max_sequence_length", 4096)
    if lengths[0] < 1 or lengths[-1] > max_len:
        ap.error(f"--lengths must be within 1 .. max_sequence_length ({max_len})")
    if not args.skip_ort and not os.path.isfile(os.path.join(args.model_dir, "model.onnx")):
        ap.error(f"{args.model_dir}/model.onnx not found (make_bench_model.py --onnx, or --skip-ort)")
    n_ids = min(cfg.get("vocab_size") or cfg["embedding_size"], cfg.get("embedding_size") or cfg["vocab_size"])

    torch_version = ort_version = None
    if not args.skip_torch:
        import torch

        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        torch_version = torch.__version__
    if not args.skip_ort:
        import onnxruntime as ort

        ort_version = ort.__version__

    inputs = {L: make_inputs(L, n_ids, args.seed) for L in lengths}
    out = {
        "torch_version": torch_version,
        "onnxruntime_version": ort_version,
        "threads": args.threads,
        "results": [],
        "peak_rss_mb": None,
        "check": None,
        "lengths": lengths,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "seed": args.seed,
        "model_dir": os.path.abspath(args.model_dir),
        "model": {k: cfg.get(k) for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size",
                                          "vocab_size")},
        "load_s": {},
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out["model"]["n_params"] = None
    out["model"]["safetensors_dtype"] = safetensors_dtype(args.model_dir)

    ref_ort = ref_torch = None
    if not args.skip_ort:
        res, ref_ort = bench_ort(args.model_dir, lengths, inputs, args.threads, args.warmup, args.repeats, out)
        out["results"] += res
    if not args.skip_torch:
        res, ref_torch = bench_torch(args.model_dir, lengths, inputs, args.threads, args.warmup, args.repeats, out)
        out["results"] += res

    ok = True
    if ref_ort is not None and ref_torch is not None:
        if ref_ort.shape != ref_torch.shape:
            d = float("inf")
        else:
            d = float(np.max(np.abs(ref_ort.astype(np.float64) - ref_torch.astype(np.float64))))
        ok = d < ATOL and bool(np.isfinite(ref_ort).all()) and bool(np.isfinite(ref_torch).all())
        out["check"] = {"seq_len": lengths[0], "max_abs_diff": d, "atol": ATOL, "passed": ok}
        print(f"check at seq {lengths[0]}: max|onnxruntime - pytorch| = {d:.3e} (atol {ATOL:g}) "
              f"{'ok' if ok else 'FAILED'}")
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)

    os.makedirs(os.path.dirname(os.path.abspath(args.json)) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(f"peak RSS {out['peak_rss_mb']:.1f} MiB; wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
