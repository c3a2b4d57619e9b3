#!/usr/bin/env python3
"""Times LLaDA forward passes from Python (PyTorch eager and ONNX Runtime) on request, so that the Rust benchmark
(examples/benchmark.rs) interleaves them with its own engines' runs.

    python examples/bench/python_bench.py MODEL_DIR --threads N [--skip-torch] [--skip-ort]

MODEL_DIR is a checkpoint directory (config.json + model.safetensors, and model.onnx for ONNX Runtime), e.g. the
output of examples/bench/make_bench_model.py. The engines not skipped are loaded once, side by side in this process
(the benchmark times each in a process of its own, and starts one with both only for the check):

- pytorch-eager: tests/fixtures/llada_torch.py's LLaDA loaded from model.safetensors as float32 (bf16 checkpoints
  are upcast), model.eval(), torch.set_num_threads(N), torch.set_num_interop_threads(1), torch.inference_mode().
- onnxruntime-python: MODEL_DIR/model.onnx, CPUExecutionProvider, intra_op_num_threads N, inter_op_num_threads 1,
  ORT_ENABLE_ALL, ORT_SEQUENTIAL; other session options at their defaults.

Protocol: one JSON object per line. After loading, the script writes to stdout

    {"ready": true, "engines": [...], "torch_version": str | null, "onnxruntime_version": str | null,
     "load_s": {engine: seconds}}

then answers each line read from stdin with one line on stdout:

    {"engine": E, "ids": [...]}   -> {"seconds": t}     one forward pass of batch 1 over `ids` (attention mask all
                                                         ones), wall clock by time.perf_counter, logits included
                                                         (PyTorch: the float32 logits tensor; ONNX Runtime:
                                                         session.run returning the numpy logits); the inputs are
                                                         built before the clock starts
    {"check": [...]}              -> {"max_abs_diff": d, "passed": bool}   both engines' logits over these ids,
                                                         agreeing within 1e-3 (max absolute difference)
    {"report": true}              -> {"peak_rss_mb": m}  this process's peak resident set (VmHWM), MiB

and exits at the end of its input. Progress and errors go to stderr; a request it cannot serve ends the script with
status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


class OrtEngine:
    name = "onnxruntime-python"

    def __init__(self, model_dir: str, threads: int):
        import onnxruntime as ort

        self.version = ort.__version__
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so,
                                         providers=["CPUExecutionProvider"])

        # The exporter's cached graph: a full pass is position_start 0 over an empty past.
        self.past = [(i.name, i.shape) for i in self.sess.get_inputs() if i.name.startswith("past_")]

    def inputs(self, ids: np.ndarray):
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if self.past:
            feed["position_start"] = np.array([0], np.int64)
            feed["logits_window"] = np.array([0, ids.shape[1]], np.int64)
            for name, shape in self.past:
                feed[name] = np.zeros((ids.shape[0], shape[1], 0, shape[3]), np.float32)
        return feed

    def run(self, feed) -> np.ndarray:
        return self.sess.run(["logits"], feed)[0]


class TorchEngine:
    name = "pytorch-eager"

    def __init__(self, model_dir: str, threads: int):
        import torch

        import llada_torch as lt

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        self.torch = torch
        self.version = torch.__version__
        self.model = lt.load_model(model_dir).float().eval()

    def inputs(self, ids: np.ndarray):
        ids = self.torch.from_numpy(ids)
        return ids, self.torch.ones_like(ids)

    def run(self, feed) -> np.ndarray:
        ids, mask = feed
        with self.torch.inference_mode():
            return self.model(ids, attention_mask=mask).numpy()


def reply(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(engines: dict) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if "engine" in request:
            engine = engines[request["engine"]]
            feed = engine.inputs(np.asarray([request["ids"]], dtype=np.int64))
            t0 = time.perf_counter()
            engine.run(feed)
            reply({"seconds": time.perf_counter() - t0})
        elif "check" in request:
            if len(engines) != 2:
                raise ValueError("a check needs both engines")
            ids = np.asarray([request["check"]], dtype=np.int64)
            a, b = (e.run(e.inputs(ids)).astype(np.float64) for e in engines.values())
            d = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
            passed = d < ATOL and bool(np.isfinite(a).all()) and bool(np.isfinite(b).all())
            print(f"check over {ids.shape[1]} tokens: max|onnxruntime - pytorch| = {d:.3e} (atol {ATOL:g}) "
                  f"{'ok' if passed else 'FAILED'}", file=sys.stderr, flush=True)
            reply({"max_abs_diff": d, "passed": passed})
        elif "report" in request:
            reply({"peak_rss_mb": round(peak_rss_mb(), 1)})
        else:
            raise ValueError(f"unknown request {sorted(request)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--threads", type=int, required=True, help="intra-op threads for both engines")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-ort", action="store_true")
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.skip_torch and args.skip_ort:
        ap.error("nothing to do: both --skip-torch and --skip-ort")
    if not args.skip_ort and not os.path.isfile(os.path.join(args.model_dir, "model.onnx")):
        ap.error(f"{args.model_dir}/model.onnx not found (make_bench_model.py --onnx, or --skip-ort)")

    engines, load_s = {}, {}
    for kind, skip in ((OrtEngine, args.skip_ort), (TorchEngine, args.skip_torch)):
        if skip:
            continue
        t0 = time.perf_counter()
        engines[kind.name] = kind(args.model_dir, args.threads)
        load_s[kind.name] = time.perf_counter() - t0
        print(f"{kind.name} {engines[kind.name].version}: {args.model_dir} loaded in {load_s[kind.name]:.2f}s",
              file=sys.stderr, flush=True)
    versions = {e.name: e.version for e in engines.values()}
    reply({"ready": True, "engines": list(engines), "torch_version": versions.get(TorchEngine.name),
           "onnxruntime_version": versions.get(OrtEngine.name), "load_s": load_s})
    serve(engines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
