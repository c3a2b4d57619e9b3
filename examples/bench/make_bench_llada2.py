#!/usr/bin/env python3
"""Writes the benchmark's LLaDA2-shaped model: a mid-size checkpoint with LLaDA2.0's architecture and file layout
(`LLaDA2MoeModelLM`, model_type `llada2_moe`) and seeded random weights, and its Q4_K_M GGUF file written by this
library's own writer (llama.cpp has no diffusion architecture for LLaDA2; the file uses our `llada2` arch with
llama.cpp's `bailingmoe2` key and tensor names).

    python examples/bench/make_bench_llada2.py [OUT_DIR] [--seed 0] [--force] [--no-gguf]

OUT_DIR defaults to bench-models/llada2 (git-ignored); the GGUF file goes to OUT_DIR/../gguf/llada2-q4_k_m.gguf,
written by `cargo run --release --example gguf` (so cargo must be on PATH).

Architecture (its active size is the LLaDA-MoE-shaped benchmark model's, examples/bench/make_bench_moe.py, within
5%): hidden_size 1024, 12 layers, 16 attention heads and 4 key/value heads (head_dim 64, grouped-query as
Ling-mini-2.0), one fused query_key_value projection, per-head q/k RMSNorm, rotate-half RoPE on the first 32 of the
64 dimensions (partial_rotary_factor 0.5), layer 0 a dense SwiGLU of 2816 (first_k_dense_replace 1), layers 1-11 a
mixture of 64 SwiGLU experts of width 256 in 8 groups (n_group 8, topk_group 4), top-8 by sigmoid scores plus a
per-expert bias used only to choose, weights renormalised and scaled by routed_scaling_factor 2.5, plus one shared
expert of width 256 (num_shared_experts 1); vocab_size 32000, max_position_embeddings 4096, rope_theta 50000,
rms_norm_eps 1e-6, untied lm_head, no biases. Ids as the other benchmark models: mask_token_id 31999,
eos_token_id = pad_token_id 31998. Weights as make_bench_moe.py draws them (N(0, 0.02^2) per matrix, the
expert bias too; N(0, 1) for the embedding, so the routing spreads; 1.0 for the norms), each tensor from its own
seeded stream; float32 safetensors, one file.

Outputs: OUT_DIR/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json, special_tokens_map.json
(tiny-llada's, as the other benchmark models), make_bench_llada2.json (a stamp: a rerun with the same request does
nothing)}, and OUT_DIR/../gguf/llada2-q4_k_m.gguf.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_bench_moe as mb  # noqa: E402  (its seeded weights and safetensors streaming)

REPO = mb.REPO
DEFAULT_OUT = os.path.join(REPO, "bench-models", "llada2")
STAMP_NAME = "make_bench_llada2.json"
GENERATOR_VERSION = 1
ARCH = dict(hidden=1024, layers=12, heads=16, kv_heads=4, experts=64, groups=8, used_groups=4, top_k=8,
            expert_ffn=256, shared=1, dense_ffn=2816, dense_layers=1, vocab=32000, max_pos=4096)


def build_config(a: dict) -> dict:
    return {
        "architectures": ["LLaDA2MoeModelLM"],
        "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                     "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
        "model_type": "llada2_moe",
        "hidden_act": "silu",
        "hidden_size": a["hidden"],
        "head_dim": a["hidden"] // a["heads"],
        "intermediate_size": a["dense_ffn"],
        "max_position_embeddings": a["max_pos"],
        "moe_intermediate_size": a["expert_ffn"],
        "n_group": a["groups"],
        "topk_group": a["used_groups"],
        "num_attention_heads": a["heads"],
        "num_key_value_heads": a["kv_heads"],
        "num_experts": a["experts"],
        "num_experts_per_tok": a["top_k"],
        "num_shared_experts": a["shared"],
        "first_k_dense_replace": a["dense_layers"],
        "num_hidden_layers": a["layers"],
        "norm_topk_prob": True,
        "score_function": "sigmoid",
        "moe_router_enable_expert_bias": True,
        "routed_scaling_factor": 2.5,
        "partial_rotary_factor": 0.5,
        "rope_theta": 50000,
        "rope_scaling": None,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "use_bias": False,
        "use_qkv_bias": False,
        "use_qk_norm": True,
        "vocab_size": a["vocab"],
        "mask_token_id": a["vocab"] - 1,
        "eos_token_id": a["vocab"] - 2,
        "pad_token_id": a["vocab"] - 2,
        "torch_dtype": "float32",
    }


def tensor_shapes(cfg: dict) -> dict:
    d, V = cfg["hidden_size"], cfg["vocab_size"]
    H, Hkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    E, F, D = cfg["num_experts"], cfg["moe_intermediate_size"], cfg["intermediate_size"]
    S = F * cfg["num_shared_experts"]
    shapes = {"model.word_embeddings.weight": (V, d), "model.norm.weight": (d,), "lm_head.weight": (V, d)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "attention.query_key_value.weight": ((H + 2 * Hkv) * hd, d),
            p + "attention.query_layernorm.weight": (hd,),
            p + "attention.key_layernorm.weight": (hd,),
            p + "attention.dense.weight": (d, H * hd),
            p + "post_attention_layernorm.weight": (d,),
        })
        if n < cfg["first_k_dense_replace"]:
            shapes.update({p + "mlp.gate_proj.weight": (D, d), p + "mlp.up_proj.weight": (D, d),
                           p + "mlp.down_proj.weight": (d, D)})
            continue
        shapes.update({p + "mlp.gate.weight": (E, d), p + "mlp.gate.expert_bias": (E,)})
        for e in range(E):
            q = f"{p}mlp.experts.{e}."
            shapes.update({q + "gate_proj.weight": (F, d), q + "up_proj.weight": (F, d),
                           q + "down_proj.weight": (d, F)})
        q = p + "mlp.shared_experts."
        shapes.update({q + "gate_proj.weight": (S, d), q + "up_proj.weight": (S, d), q + "down_proj.weight": (d, S)})
    return shapes


def active_params(cfg: dict) -> int:
    shapes = tensor_shapes(cfg)
    E, k = cfg["num_experts"], cfg["num_experts_per_tok"]
    total = 0
    for name, shape in shapes.items():
        size = 1
        for s in shape:
            size *= s
        if ".mlp.experts." in name:
            size = size * k // E
        total += size
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", nargs="?", default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--gguf", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    gguf_dir = os.path.join(os.path.dirname(out), "gguf")
    gguf = os.path.join(gguf_dir, "llada2-q4_k_m.gguf")
    cfg = build_config(ARCH)
    request = {"version": GENERATOR_VERSION, "seed": args.seed, "config": cfg}
    stamp_path = os.path.join(out, STAMP_NAME)
    try:
        stamp = json.load(open(stamp_path))
    except (OSError, ValueError):
        stamp = {}
    st_path = os.path.join(out, "model.safetensors")
    fresh = args.force or stamp.get("request") != request or not mb.file_matches(st_path, stamp.get("safetensors"))
    if fresh:
        with open(os.path.join(out, "config.json"), "w") as f:
            f.write(mb.config_text(cfg))
        for name in mb.TOKENIZER_FILES:
            shutil.copyfile(os.path.join(mb.TOKENIZER_SRC, name), os.path.join(out, name))
        mb.EMBEDDING = "model.word_embeddings.weight"  # N(0, 1) for the embedding, as make_bench_moe.py's
        info = mb.write_safetensors(st_path, tensor_shapes(cfg), args.seed, mb.EMBEDDING_STD)
        stamp = {"request": request, "safetensors": {"bytes": os.path.getsize(st_path), **info},
                 "active_params": active_params(cfg)}
        if os.path.exists(gguf):
            os.remove(gguf)
        with open(stamp_path, "w") as f:
            json.dump(stamp, f, indent=2, sort_keys=True)
        mb.log(f"{st_path}: {mb.fmt_bytes(os.path.getsize(st_path))}, {info['n_params']:,} parameters, "
               f"{active_params(cfg):,} active per token")
    else:
        mb.log(f"{st_path}: up to date")
    if args.gguf and (fresh or not os.path.isfile(gguf)):
        os.makedirs(gguf_dir, exist_ok=True)
        cmd = ["cargo", "run", "--release", "--quiet", "--example", "gguf", "--", "--model", out, "--type", "q4_k_m",
               "--out", gguf]
        mb.log("$ " + " ".join(cmd))
        subprocess.run(cmd, cwd=REPO, check=True)
        mb.log(f"{gguf}: {mb.fmt_bytes(os.path.getsize(gguf))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
