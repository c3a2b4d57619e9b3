#!/usr/bin/env python3
"""Writes the benchmark model: a mid-size LLaDA-architecture checkpoint with seeded random weights.

    python examples/bench/make_bench_model.py OUT_DIR [--dtype f32|bf16] [--seed 0] [--onnx|--no-onnx] [--force]

Architecture (about 220 M parameters): d_model 1024, 12 layers, 16 heads, 16 kv heads, mlp_hidden_size 2816,
vocab_size = embedding_size = 32000, max_sequence_length 2048, rope_theta 500000, rms_norm_eps 1e-5;
mask_token_id 31999, eos_token_id = pad_token_id 31998.

Outputs in OUT_DIR
- config.json        same schema and field names as tests/fixtures/tiny-llada/config.json (sizes changed)
- model.safetensors  float32 (--dtype f32, default) or bfloat16 (--dtype bf16), LLaDA's tensor names
                     (model.transformer.wte.weight, model.transformer.blocks.N.q_proj.weight, ...), metadata
                     {"format": "pt"}. Weights: N(0, 0.02^2) for every linear and embedding matrix, 1.0 for every
                     RMSNorm weight. Each tensor is drawn from its own numpy PCG64 stream seeded by (seed,
                     crc32(tensor name)), so the same seed gives the same bytes, whatever the order of writing.
- model.onnx         unless --no-onnx: llada-ort/export/export_onnx.py's cached graph (input_ids, attention_mask,
                     position_start, logits_window and the past keys/values in; the logits window and the present
                     keys/values out; opset 17, float32 weights), exported
                     from the weights as loaded back from model.safetensors (so for --dtype bf16 it holds the
                     bf16-rounded values in float32 and both engines compute the same function). One self-check
                     against PyTorch (batch 1, seq 16, max |diff| < 1e-4) follows the export.
- model-int4.onnx    unless --no-onnx: model.onnx with 4-bit weights (ONNX Runtime's MatMulNBits quantizer, blocks of
                     128, symmetric, accuracy_level 4: int8 activations on CPU), by export_onnx.quantize_int4.
- make_bench_model.json  a stamp: what was generated (seed, dtype, config, init) and the sizes / sha256 of the files.
  A rerun whose request matches the stamp, and whose files are still there with the recorded sizes, does nothing;
  --force regenerates everything. New weights delete a stale model.onnx.

Memory: about 1 GB for the weights, ~3-4 GB peak during the ONNX export and check (220 M model).
Hidden flag --tiny: d_model 64, 2 layers, 4 heads, mlp 176, vocab 512 (for smoke tests only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "fixtures"))
sys.path.insert(0, FIXTURES)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "llada-ort", "export"))

GENERATOR_VERSION = 1
INT4_NAME = "model-int4.onnx"
INT4_BLOCK = 128
STAMP_NAME = "make_bench_model.json"
INIT_STD = 0.02

# Copy of tests/fixtures/tiny-llada/config.json (the schema of the published LLaDA config.json); sizes are replaced.
CONFIG_TEMPLATE = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModel": "modeling_llada.LLaDAModelLM",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 128,
    "embedding_dropout": 0.0,
    "embedding_size": 640,
    "eos_token_id": 613,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "cpu",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 614,
    "max_sequence_length": 256,
    "mlp_hidden_size": 352,
    "mlp_ratio": 2.75,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 4,
    "n_kv_heads": 2,
    "n_layers": 4,
    "pad_token_id": 613,
    "precision": "fp32",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 640,
    "weight_tying": False,
}

BENCH_ARCH = dict(d_model=1024, n_layers=12, n_heads=16, n_kv_heads=16, mlp_hidden_size=2816, vocab=32000,
                  max_sequence_length=2048)
TINY_ARCH = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=176, vocab=512,
                 max_sequence_length=2048)


def build_config(arch: dict, dtype: str) -> dict:
    cfg = json.loads(json.dumps(CONFIG_TEMPLATE))
    vocab = arch["vocab"]
    cfg.update(
        d_model=arch["d_model"],
        n_layers=arch["n_layers"],
        n_heads=arch["n_heads"],
        n_kv_heads=arch["n_kv_heads"],
        mlp_hidden_size=arch["mlp_hidden_size"],
        mlp_ratio=round(arch["mlp_hidden_size"] / arch["d_model"], 2),
        vocab_size=vocab,
        embedding_size=vocab,
        max_sequence_length=arch["max_sequence_length"],
        mask_token_id=vocab - 1,
        eos_token_id=vocab - 2,
        pad_token_id=vocab - 2,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        init_std=INIT_STD,
        precision="fp32" if dtype == "f32" else "amp_bf16",
    )
    return cfg


def config_text(cfg: dict) -> str:
    return json.dumps(cfg, indent=2, sort_keys=True) + "\n"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_stamp(out: str) -> dict:
    try:
        with open(os.path.join(out, STAMP_NAME)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_stamp(out: str, stamp: dict):
    tmp = os.path.join(out, STAMP_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump(stamp, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(out, STAMP_NAME))


def file_matches(path: str, rec) -> bool:
    return bool(rec) and os.path.isfile(path) and os.path.getsize(path) == rec.get("bytes")


def is_norm(name: str) -> bool:
    return name.endswith("norm.weight") or name.endswith("ln_f.weight")


def tensor_values(name: str, shape, seed: int) -> np.ndarray:
    if is_norm(name):
        return np.ones(shape, dtype=np.float32)
    ss = np.random.SeedSequence([seed, zlib.crc32(name.encode())])
    rng = np.random.Generator(np.random.PCG64(ss))
    arr = rng.standard_normal(size=tuple(shape), dtype=np.float32)
    arr *= np.float32(INIT_STD)
    return arr


def write_weights(out: str, cfg_json: dict, dtype: str, seed: int) -> dict:
    import torch
    from safetensors.torch import save_file

    import llada_torch as lt

    cfg = lt.LLaDAConfig.from_dict(cfg_json)
    with torch.device("meta"):
        skeleton = lt.LLaDA(cfg)  # names and shapes only, no memory
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    del skeleton
    tdtype = torch.float32 if dtype == "f32" else torch.bfloat16
    sd = {}
    n_params = 0
    for name in sorted(shapes):
        t = torch.from_numpy(tensor_values(name, shapes[name], seed))
        sd[name] = t if tdtype == torch.float32 else t.to(tdtype)
        n_params += t.numel()
    path = os.path.join(out, "model.safetensors")
    tmp = path + ".tmp"
    save_file(sd, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)
    del sd
    return {"n_params": n_params, "n_tensors": len(shapes)}


def onnx_self_check(onnx_path: str, out: str, threads: int, atol: float = 1e-4) -> float:
    """Batch 1, seq 16, no padding: max |ONNX Runtime - PyTorch| over the logits."""
    import onnxruntime as ort
    import torch

    import export_onnx as eo
    import llada_torch as lt

    model = lt.load_model(out)
    spec = eo.Spec(model)
    cfg = model.cfg
    L = min(16, cfg.max_sequence_length)
    rng = np.random.default_rng(1234)
    ids = rng.integers(0, min(cfg.vocab_size, cfg.embedding_size) - 2, size=(1, L), dtype=np.int64)
    mask = np.ones((1, L), dtype=np.int64)
    with torch.inference_mode():
        want = model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).numpy()
    del model
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    got = eo.full_runner(sess, spec)(ids, mask)
    if got.shape != want.shape:
        raise SystemExit(f"self-check FAILED: ONNX logits shape {got.shape}, PyTorch {want.shape}")
    d = float(np.max(np.abs(got - want)))
    ok = d < atol and bool(np.isfinite(got).all())
    print(f"self-check (batch 1, seq {L}): max|onnx - torch| = {d:.3e} (atol {atol:g}) {'ok' if ok else 'FAILED'}")
    if not ok:
        raise SystemExit(1)
    return d


def export_onnx_file(out: str, threads: int) -> dict:
    import torch

    import export_onnx as eo
    import llada_torch as lt

    onnx_path = os.path.join(out, "model.onnx")
    model = lt.load_model(out)  # the weights as stored (bf16-rounded for --dtype bf16), held in float32
    with torch.no_grad():
        info = eo.export(model, out, onnx_path, 17, "float32", "auto")
    del model
    return info


def quantize_onnx_file(out: str) -> int:
    """model-int4.onnx: model.onnx with 4-bit MatMulNBits weights (blocks of 128, symmetric, accuracy_level 4)."""
    import export_onnx as eo

    return eo.quantize_int4(os.path.join(out, "model.onnx"), os.path.join(out, INT4_NAME), INT4_BLOCK, True, 4, "auto")


def fmt_bytes(n: int) -> str:
    return f"{n:,} bytes ({n / 2**20:.1f} MiB)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="dtype of model.safetensors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                    help="also write model.onnx (float32 weights) and check it against PyTorch")
    ap.add_argument("--force", action="store_true", help="regenerate even when the outputs match the request")
    ap.add_argument("--threads", type=int, default=2, help="threads for the export and the self-check")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    t_start = time.time()
    out = args.out_dir
    os.makedirs(out, exist_ok=True)
    arch = TINY_ARCH if args.tiny else BENCH_ARCH
    cfg_json = build_config(arch, args.dtype)
    want = {"generator_version": GENERATOR_VERSION, "seed": args.seed, "dtype": args.dtype,
            "init": {"linear_and_embedding_std": INIT_STD, "norm_weight": 1.0, "rng": "numpy PCG64 per tensor, "
                     "SeedSequence([seed, crc32(name)]), standard_normal float32"},
            "config": cfg_json}

    cfg_path = os.path.join(out, "config.json")
    st_path = os.path.join(out, "model.safetensors")
    onnx_path = os.path.join(out, "model.onnx")
    stamp = {} if args.force else read_stamp(out)
    cfg_on_disk = open(cfg_path).read() if os.path.isfile(cfg_path) else None

    weights_ok = (stamp.get("request") == want and cfg_on_disk == config_text(cfg_json)
                  and file_matches(st_path, stamp.get("safetensors")))
    if weights_ok:
        print(f"{st_path}: up to date ({fmt_bytes(os.path.getsize(st_path))}, {stamp['n_params']:,} parameters), "
              f"skipped")
    else:
        t0 = time.time()
        for p in (onnx_path, onnx_path + ".data", os.path.join(out, STAMP_NAME)):
            if os.path.exists(p):
                os.remove(p)  # stale: made from other weights
        with open(cfg_path, "w") as f:
            f.write(config_text(cfg_json))
        info = write_weights(out, cfg_json, args.dtype, args.seed)
        stamp = {"request": want, "n_params": info["n_params"],
                 "safetensors": {"bytes": os.path.getsize(st_path), "sha256": sha256_file(st_path)}}
        write_stamp(out, stamp)
        print(f"wrote {cfg_path} and {st_path}: {info['n_params']:,} parameters in {info['n_tensors']} tensors, "
              f"{args.dtype}, {fmt_bytes(os.path.getsize(st_path))}, in {time.time() - t0:.1f}s")

    if args.onnx:
        rec = stamp.get("onnx") or {}
        onnx_ok = (rec.get("source_sha256") == stamp["safetensors"]["sha256"] and rec.get("graph") == "cached"
                   and file_matches(onnx_path, rec))
        if onnx_ok:
            print(f"{onnx_path}: up to date ({fmt_bytes(os.path.getsize(onnx_path))}), skipped")
        else:
            import torch

            if args.threads > 0:
                torch.set_num_threads(args.threads)
            stamp.pop("onnx", None)
            write_stamp(out, stamp)
            t0 = time.time()
            info = export_onnx_file(out, args.threads)
            t_export = time.time() - t0
            size = os.path.getsize(onnx_path)
            extra = ""
            if info["external"]:
                extra = f" + {info['data_path']} ({fmt_bytes(os.path.getsize(info['data_path']))})"
            print(f"wrote {onnx_path}: {fmt_bytes(size)}{extra}, in {t_export:.1f}s")
            t0 = time.time()
            diff = onnx_self_check(onnx_path, out, max(args.threads, 1))
            print(f"self-check took {time.time() - t0:.1f}s")
            stamp["onnx"] = {"bytes": size, "sha256": sha256_file(onnx_path),
                             "source_sha256": stamp["safetensors"]["sha256"], "opset": 17,
                             "weights_dtype": "float32", "external_data": bool(info["external"]), "graph": "cached",
                             "self_check_max_abs_diff": diff}
            write_stamp(out, stamp)
        int4_path = os.path.join(out, INT4_NAME)
        rec = stamp.get("onnx_int4") or {}
        if (rec.get("source_sha256") == stamp["onnx"]["sha256"] and rec.get("block_size") == INT4_BLOCK
                and file_matches(int4_path, rec)):
            print(f"{int4_path}: up to date ({fmt_bytes(os.path.getsize(int4_path))}), skipped")
        else:
            t0 = time.time()
            n = quantize_onnx_file(out)
            stamp["onnx_int4"] = {"bytes": os.path.getsize(int4_path), "sha256": sha256_file(int4_path),
                                  "source_sha256": stamp["onnx"]["sha256"], "matmuls": n, "block_size": INT4_BLOCK,
                                  "symmetric": True, "accuracy_level": 4}
            write_stamp(out, stamp)
            print(f"wrote {int4_path}: {fmt_bytes(os.path.getsize(int4_path))} in {time.time() - t0:.1f}s")
    print(f"done in {time.time() - t_start:.1f}s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
