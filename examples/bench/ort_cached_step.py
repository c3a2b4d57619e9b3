#!/usr/bin/env python3
"""ONNX Runtime from Python on the exporter's cached graph: one denoising step of the benchmark's shape, to put
beside llada-ort's (so that what the Rust side adds or saves stays visible).

    python examples/bench/ort_cached_step.py MODEL.onnx [--prompt 128] [--gen 128] [--block 32] [--threads 2]
        [--repeats 11]

Canvas: `prompt` random ids (seeded), then `gen` mask ids (the model's llada.mask_token_id); the logits window is
the first `block` answer positions. Timed, interleaved round by round after one warm-up each, `sess.run` with numpy
inputs as a Python user calls it:
- full:   the whole canvas (position_start 0, an empty past), logits of the window only;
- dual:   the block alone against the keys and values of a full pass (Fast-dLLM's dual cache);
- prefix: the block and everything after it against the keys and values of the positions before it.
Prints one JSON object: {"full": s, "dual": s, "prefix": s, "onnxruntime": version} (medians, seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    if meta.get("llada.cache") != "kv":
        raise SystemExit(f"{args.model} is not a cached graph (export it with --graph cached)")
    mask_id = int(meta["llada.mask_token_id"])
    vocab = int(meta["llada.vocab_size"])
    past = [i for i in sess.get_inputs() if i.name.startswith("past_")]
    kv_heads, head_dim = past[0].shape[1], past[0].shape[3]

    seq = args.prompt + args.gen
    rng = np.random.default_rng(11)
    ids = np.full((1, seq), mask_id, np.int64)
    ids[0, : args.prompt] = rng.integers(0, min(vocab, mask_id) - 2, size=args.prompt)
    mask = np.ones((1, seq), np.int64)
    s, e = args.prompt, args.prompt + args.block
    empty = np.zeros((1, kv_heads, 0, head_dim), np.float32)

    def feeds(start: int, end: int, past_values):
        f = {"input_ids": ids[:, start:end], "attention_mask": mask,
             "position_start": np.array([start], np.int64), "logits_window": np.array([s, e], np.int64)}
        for i, p in enumerate(past):
            f[p.name] = empty if past_values is None else past_values[i]
        return f

    full_feeds = feeds(0, seq, None)
    present = sess.run(None, full_feeds)[1:]
    cases = {"full": full_feeds, "dual": feeds(s, e, present), "prefix": feeds(s, seq, present)}
    logits = ["logits"]
    for f in cases.values():
        sess.run(logits, f)
    samples = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, f in cases.items():
            time.sleep(0.25)  # ONNX Runtime's workers spin for a while after a run
            t = time.perf_counter()
            sess.run(logits, f)
            samples[name].append(time.perf_counter() - t)
    out = {k: statistics.median(v) for k, v in samples.items()}
    out["onnxruntime"] = ort.__version__
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
