#!/usr/bin/env python3
"""Writes the benchmark's mixture-of-experts model: a mid-size checkpoint with LLaDA-MoE-7B-A1B's architecture and
file layout (`LLaDAMoEModelLM`) and seeded random weights, and its GGUF conversions made by llama.cpp's own tools.

    python examples/bench/make_bench_moe.py [OUT_DIR] [--seed 0] [--gguf|--no-gguf] [--force]
           [--llama-src SRC] [--llama-build BUILD] [--threads 2] [--diffusion-check|--no-diffusion-check]
           [--torch-check]

OUT_DIR defaults to bench-models/moe (git-ignored, as all of bench-models/); the GGUF files go to --gguf-dir,
default OUT_DIR/../gguf, named <basename of OUT_DIR>-<type>.gguf: bench-models/gguf/moe-{f32,q8_0,q4_k_m}.gguf.

Architecture (418,277,888 parameters; 191,758,336 used per token, embedding and head included): hidden_size 1024, 12
layers, 16 attention heads and 16 key/value heads (head_dim 64), per-head q/k RMSNorm (qk_layernorm), every layer
(moe_layer_freq [1]*12) a mixture of 32 SwiGLU experts of width expert_intermediate_size 256 with top-8 softmax
routing over all experts, no top-k renormalisation (norm_topk_prob false), no expert bias, no shared expert,
routed_scaling_factor 1; dense_intermediate_size 2816 (the dense benchmark model's width; unused, every layer is a
mixture), vocab_size 32000, max_position_embeddings 4096, rope_theta 50000 over the full head (partial_rotary_factor
1.0), rms_norm_eps 1e-5, untied lm_head, no attention bias, silu. Ids as the dense benchmark model
(examples/bench/make_bench_model.py): mask_token_id 31999, eos_token_id = pad_token_id 31998; bos_token_id 601 (the
tokenizer's <|startoftext|>). Expert width 256 rather than 512 keeps the F32 files at 1.7 GB (512 would make them
2.9 GB).

Outputs in OUT_DIR
- config.json        LLaDA-MoE-7B-A1B's config.json keys (its remote code's `LLaDAConfig`, model_type "llada",
                     architectures ["LLaDAMoEModelLM"], auto_map to configuration_lladamoe / modeling_lladamoe), the
                     sizes and ids above, plus mask_token_id (the release's config has none; its code and llama.cpp's
                     converter hard-code 156895).
- model.safetensors  float32, one file, the release's tensor names: model.embed_tokens.weight [V, d],
                     model.layers.N.input_layernorm.weight [d], model.layers.N.self_attn.{q,k,v,o}_proj.weight,
                     model.layers.N.self_attn.{q,k}_norm.weight [head_dim], model.layers.N.post_attention_layernorm
                     .weight [d], model.layers.N.mlp.gate.weight [experts, d] (the router),
                     model.layers.N.mlp.experts.E.{gate,up}_proj.weight [256, d], ...down_proj.weight [d, 256],
                     model.norm.weight [d], lm_head.weight [V, d]; metadata {"format": "pt"}, tensors in name order.
                     Weights N(0, 0.02^2) for every matrix but the embedding (router included: its logits have
                     std ~0.6 on a unit-RMS input, so each token's softmax over 32 experts is far from one-hot and
                     far from uniform: top-8 mass ~0.5, largest probability ~0.1), N(0, 1) for model.embed_tokens
                     (--embedding-std, default 1.0), 1.0 for every RMSNorm weight (q_norm / k_norm too). Each
                     tensor is drawn from its own numpy PCG64 stream seeded by (seed, crc32(tensor name)) and scaled
                     by its std, as make_bench_model.py does, so the same seed gives the same bytes; the file is
                     written tensor by tensor (never all in memory).
                     Why the embedding differs from the dense model's 0.02: the embedding row is the only
                     token-specific input, and with std 0.02 the near-uniform random attention adds a component
                     shared by all positions (RMS ~0.1) that swamps it after the first layer, so every token routes
                     alike: on 256 random tokens, layers 1-11 used only 8-15 of the 32 experts, with 1-32 distinct
                     top-8 sets (layers 5-7: all 256 tokens chose the same 8 experts). With std 1.0 every layer
                     uses all 32 experts, the busiest taking 4-5% of the 2048 picks (uniform: 3.1%), with ~220-237
                     distinct top-8 sets out of 256: the spread of a real mixture, which a benchmark of the expert
                     kernels needs. (--embedding-std 0.02 gives the collapsed variant.)
- tokenizer.json, tokenizer_config.json, special_tokens_map.json
                     copies of tests/fixtures/tiny-llada's, the tokenizer the dense benchmark model's GGUF files carry
                     (make_gguf.py --steps bench links the same three files into its staging directory): GPT-2
                     byte-level BPE with 607 entries (601 learned + 6 specials: <|startoftext|> 601, <|endoftext|>
                     602, <|mdm_mask|> 603, <|start_header_id|> 604, <|end_header_id|> 605, <|eot_id|> 606) and a
                     Llama-3-style chat template in tokenizer_config.json. Ids 607..31999 have no text: the
                     converter writes them as unused `[PADn]` tokens, and the mask id 31999 is one of them.
- make_bench_moe.json  a stamp: what was generated (seed, config, init, generator version), the sizes and sha256 of
                     model.safetensors and of each GGUF file, the GGUF files' source checkpoint hash, and the last
                     llama-diffusion-cli check. A rerun whose request matches the stamp, with every file still there
                     at its recorded size, does nothing; --force regenerates everything; new weights delete the
                     stale GGUF files.

GGUF files (unless --no-gguf; llama.cpp as pinned in tests/fixtures/make_gguf.py, the copy vendored in the sdist
llama-cpp-python==0.3.36, commit 0c1e570, with its gguf-py 0.19.0)
 1. convert_hf_to_gguf.py OUT_DIR --outtype f32 (class LLaDAMoEModel, arch `llada-moe`), run in a child process
    that first wraps LLaDAMoEModel.get_vocab_base_pre as make_gguf.py wraps LLaDAModel's: the converter does not
    know the bundled tokenizer's pre-tokenizer hash, and this answers "gpt-2" for a plain GPT-2 byte-level BPE
    (tokenizer.json checked by make_gguf._is_plain_gpt2_bytelevel). No staging directory is needed (make_gguf.py
    stages the dense model only because bench-models/mid has no tokenizer files): OUT_DIR has them. The converter
    keeps q/k rows as they are for this arch (rotate-half RoPE), stacks each layer's experts into
    blk.N.ffn_{gate,up,down}_exps [experts, ...] tensors, writes the router as blk.N.ffn_gate_inp and the q/k norms
    as blk.N.attn_{q,k}_norm.
 2. The mask id. LLaDAMoEModel.set_gguf_parameters hard-codes tokenizer.ggml.mask_token_id 156895 (the
    release's id), outside a 32000-row vocabulary. The converter's SpecialVocab pass, which runs after it, reads
    config.json's mask_token_id and overwrites the key (the converter logs "Duplicated key name
    'tokenizer.ggml.mask_token_id', overwriting it with new value 31999"), so with this config.json the converted
    file already says 31999; a config.json without mask_token_id (as the release's) leaves 156895. Whatever the
    converter wrote, the key is then set to config.json's mask_token_id in place with gguf-py's own
    gguf-py/gguf/scripts/gguf_set_metadata.py (same type and size, no copy of the file; a no-op that says so when
    the value already matches) BEFORE quantizing, so all three files carry 31999. The stamp records the value as
    converted.
 3. llama-quantize F32 -> Q8_0 and -> Q4_K_M (`llama-quantize IN OUT TYPE THREADS`).
 4. Checks: every file's metadata (architecture, sizes, expert counts, ids, chat template, vocabulary = the
    tokenizer's 607 entries then [PAD607]..[PAD31999]); the F32 file holds the checkpoint bit for bit (the expert
    tensors being the per-expert matrices stacked in expert order); the quantized files' tensor types are printed.
 5. llama-diffusion-cli on moe-q8_0.gguf and moe-q4_k_m.gguf (when the files were just made, or with
    --diffusion-check): `-p "hello" -ub 256 -c 256 -b 256 --diffusion-steps 64 --diffusion-block-length 32
    --diffusion-algorithm 4 --temp 0 --top-k 1 --seed 0 -t THREADS`; prints and records the "total time" line.
    (The tool's logger is asynchronous and not joined at exit, so its last lines are sometimes lost on a busy
    machine, about one run in two here: a run without the line is repeated, up to 5 times.)

--torch-check loads the checkpoint into tests/fixtures/llada_moe_torch.py's LLaDAMoE (strict: every name and shape)
and runs one forward pass (batch 1, 16 tokens), printing the routing statistics of every layer.

Where llama.cpp is: --llama-src (env LLAMA_CPP_SRC; default bench-models/llama.cpp/sdist/llama_cpp_python-0.3.36/
vendor/llama.cpp, where `make_gguf.py --steps build --llama-build bench-models/llama.cpp/build` unpacks it) and
--llama-build (env LLAMA_CPP_BUILD; default bench-models/llama.cpp/build), holding bin/llama-quantize and
bin/llama-diffusion-cli. Python needs numpy (weights) and, for the GGUF step, what the converter needs (torch,
transformers 4.57.6, safetensors, tokenizers; see examples/bench/requirements.txt and make_gguf.py's pins).

Time and memory (2 cores shared with other jobs; file sizes exact for seed 0): model.safetensors 1,673,263,528 bytes
in ~10-15 s (+2 s hashing), ~0.3 MB per tensor except embed_tokens / lm_head (131 MB each), written one at a time;
conversion ~20 s, 0.9 GB peak RSS (one layer's experts stacked at a time) -> moe-f32.gguf 1,673,816,672 bytes; the
mask id rewrite <1 s; llama-quantize (2 threads, ~0.2 GB RSS) Q8_0 ~4 s -> 446,360,160 bytes, Q4_K_M ~33 s ->
260,477,536 bytes; the checks ~5 s, whose memory-mapped reads of the F32 GGUF and the safetensors file bring the
script's peak RSS to ~3.4 GB of file-backed pages. Everything but the llama-diffusion-cli check: ~80 s. Each
llama-diffusion-cli run maps its file (~0.5 GB RSS) and takes 64 forward passes of 256 tokens (~80 GFLOP each):
1-3.5 min with -t 2 on this shared 2-core machine (Q8_0 123-184 s, Q4_K_M 68-199 s over 4 runs each, depending on
the other jobs). --torch-check ~4 GB. Disk: 3.35 GB (safetensors + F32) + 0.7 GB.
Hidden flag --tiny: hidden 256, 2 layers, 4 heads, 4 experts (top-2) of width 256, vocab 1024 (smoke tests only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
sys.path.insert(0, FIXTURES)

GENERATOR_VERSION = 1
STAMP_NAME = "make_bench_moe.json"
INIT_STD = 0.02
EMBEDDING_STD = 1.0  # default of --embedding-std (see the docstring: 0.02 collapses the routing)
EMBEDDING = "model.embed_tokens.weight"
DEFAULT_OUT = os.path.join(REPO, "bench-models", "moe")
TOKENIZER_SRC = os.path.join(FIXTURES, "tiny-llada")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DEFAULT_LLAMA_BUILD = os.path.join(REPO, "bench-models", "llama.cpp", "build")
DEFAULT_LLAMA_SRC = os.path.join(REPO, "bench-models", "llama.cpp", "sdist", "llama_cpp_python-0.3.36", "vendor",
                                 "llama.cpp")
GGUF_TYPES = ("f32", "q8_0", "q4_k_m")
QUANT_NAMES = {"q8_0": "Q8_0", "q4_k_m": "Q4_K_M"}
CONVERTER_MASK_ID = 156895  # what LLaDAMoEModel.set_gguf_parameters writes
BOS_ID = 601  # the bundled tokenizer's <|startoftext|>
DIFFUSION_ARGS = ["-p", "hello", "-ub", "256", "-c", "256", "-b", "256", "--diffusion-steps", "64",
                  "--diffusion-block-length", "32", "--diffusion-algorithm", "4", "--temp", "0", "--top-k", "1",
                  "--seed", "0"]

# LLaDA-MoE-7B-A1B-Instruct's config.json keys (dInfer tools/configuration_lladamoe.py `LLaDAConfig`), as
# tests/fixtures/make_tiny_llada_moe.py's REF_CONFIG has them with the release's values; sizes and ids are replaced.
CONFIG_TEMPLATE = {
    "architectures": ["LLaDAMoEModelLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_lladamoe.LLaDAConfig",
                 "AutoModelForCausalLM": "modeling_lladamoe.LLaDAMoEModelLM",
                 "AutoModel": "modeling_lladamoe.LLaDAMoEModelLM"},
    "bos_token_id": 156891,
    "clip_qkv": None,
    "dense_intermediate_size": 8192,
    "eos_token_id": 156892,
    "expert_intermediate_size": 1024,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "max_position_embeddings": 8192,
    "model_type": "llada",
    "moe_layer_freq": [1] * 16,
    "moe_router_enable_expert_bias": False,
    "moe_router_score_function": "softmax",
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 16,
    "num_key_value_heads": 16,
    "output_router_logits": False,
    "pad_token_id": 156892,
    "partial_rotary_factor": 1.0,
    "qk_layernorm": True,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 50000,
    "routed_scaling_factor": 1,
    "router_aux_loss_coef": 0.01,
    "router_num_group": None,
    "router_topk_group": None,
    "shared_expert_intermediate_size": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.52.4",
    "use_cache": False,
    "vocab_size": 157184,
}

BENCH_ARCH = dict(hidden=1024, layers=12, heads=16, kv_heads=16, experts=32, top_k=8, expert_ffn=256,
                  dense_ffn=2816, vocab=32000, max_pos=4096)
TINY_ARCH = dict(hidden=256, layers=2, heads=4, kv_heads=4, experts=4, top_k=2, expert_ffn=256, dense_ffn=704,
                 vocab=1024, max_pos=4096)


def build_config(arch: dict) -> dict:
    cfg = json.loads(json.dumps(CONFIG_TEMPLATE))
    vocab = arch["vocab"]
    cfg.update(
        hidden_size=arch["hidden"],
        num_hidden_layers=arch["layers"],
        num_attention_heads=arch["heads"],
        num_key_value_heads=arch["kv_heads"],
        num_experts=arch["experts"],
        num_experts_per_tok=arch["top_k"],
        expert_intermediate_size=arch["expert_ffn"],
        dense_intermediate_size=arch["dense_ffn"],
        moe_layer_freq=[1] * arch["layers"],
        vocab_size=vocab,
        max_position_embeddings=arch["max_pos"],
        mask_token_id=vocab - 1,
        eos_token_id=vocab - 2,
        pad_token_id=vocab - 2,
        bos_token_id=BOS_ID,
        rope_theta=50000,
        rms_norm_eps=1e-5,
        initializer_range=INIT_STD,
        torch_dtype="float32",
    )
    return cfg


def tensor_shapes(cfg: dict) -> dict:
    """{name: shape} of the release's checkpoint layout for these sizes."""
    d, V = cfg["hidden_size"], cfg["vocab_size"]
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // H
    E, F = cfg["num_experts"], cfg["expert_intermediate_size"]
    shapes = {"model.embed_tokens.weight": (V, d), "model.norm.weight": (d,), "lm_head.weight": (V, d)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (H * hd, d),
            p + "self_attn.k_proj.weight": (Hkv * hd, d),
            p + "self_attn.v_proj.weight": (Hkv * hd, d),
            p + "self_attn.o_proj.weight": (d, H * hd),
            p + "self_attn.q_norm.weight": (hd,),
            p + "self_attn.k_norm.weight": (hd,),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.gate.weight": (E, d),
        })
        for e in range(E):
            q = f"{p}mlp.experts.{e}."
            shapes.update({q + "gate_proj.weight": (F, d), q + "up_proj.weight": (F, d),
                           q + "down_proj.weight": (d, F)})
    return shapes


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
    return name.endswith("norm.weight")


def tensor_values(name: str, shape, seed: int, embedding_std: float = EMBEDDING_STD) -> np.ndarray:
    """make_bench_model.py's rule: 1.0 for norms, else N(0, std^2) from PCG64(SeedSequence([seed, crc32(name)])),
    std = INIT_STD, or embedding_std for the embedding."""
    if is_norm(name):
        return np.ones(shape, dtype=np.float32)
    ss = np.random.SeedSequence([seed, zlib.crc32(name.encode())])
    rng = np.random.Generator(np.random.PCG64(ss))
    arr = rng.standard_normal(size=tuple(shape), dtype=np.float32)
    arr *= np.float32(embedding_std if name == EMBEDDING else INIT_STD)
    return arr


def write_safetensors(path: str, shapes: dict, seed: int, embedding_std: float) -> dict:
    """Streams a float32 safetensors file (header, then each tensor's bytes in name order)."""
    names = sorted(shapes)
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for n in names:
        nbytes = 4 * int(np.prod(shapes[n]))
        header[n] = {"dtype": "F32", "shape": list(shapes[n]), "data_offsets": [off, off + nbytes]}
        off += nbytes
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    n_params = 0
    with open(tmp, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for n in names:
            a = tensor_values(n, shapes[n], seed, embedding_std)
            f.write(a.astype("<f4", copy=False).tobytes())
            n_params += a.size
    assert os.path.getsize(tmp) == 8 + len(hb) + off
    os.replace(tmp, path)
    return {"n_params": n_params, "n_tensors": len(names)}


def fmt_bytes(n: int) -> str:
    return f"{n:,} bytes ({n / 2**20:.1f} MiB)"


def log(msg: str) -> None:
    print(msg, flush=True)


def active_params(cfg: dict) -> int:
    d, V, E, k, F = (cfg["hidden_size"], cfg["vocab_size"], cfg["num_experts"], cfg["num_experts_per_tok"],
                     cfg["expert_intermediate_size"])
    hd = d // cfg["num_attention_heads"]
    attn = d * hd * (2 * cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"])
    return 2 * V * d + cfg["num_hidden_layers"] * (attn + E * d + k * 3 * d * F)


# ----------------------------------------------------------------------------------------------------------------
# --torch-check
# ----------------------------------------------------------------------------------------------------------------

def torch_check(out: str, threads: int) -> None:
    import torch

    import llada_moe_torch as lm

    torch.set_num_threads(max(threads, 1))
    model = lm.load_model(out)  # strict: every name and shape
    cfg = model.cfg
    stats = []

    def hook(mod, inp, outp):
        probs = torch.softmax(outp.float(), dim=-1)
        w, idx = torch.topk(probs, cfg.num_experts_per_tok, dim=-1)
        load = torch.bincount(idx.flatten(), minlength=cfg.num_experts)
        stats.append((float(outp.std()), float(w.sum(-1).mean()), float(probs.max(-1).values.mean()),
                      int((load > 0).sum())))

    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(hook)
    rng = np.random.default_rng(1234)
    ids = torch.from_numpy(rng.integers(0, 600, size=(1, 16), dtype=np.int64))
    with torch.inference_mode():
        logits = model(ids)
    ok = bool(torch.isfinite(logits).all())
    log(f"torch check: loaded strictly into llada_moe_torch.LLaDAMoE; logits {tuple(logits.shape)}, std "
        f"{float(logits.std()):.4f}, finite {ok}")
    for i, (s, mass, pmax, used) in enumerate(stats):
        log(f"  layer {i:2d}: router logit std {s:.3f}, top-{cfg.num_experts_per_tok} mass {mass:.3f}, "
            f"max prob {pmax:.3f}, experts used by 16 tokens {used}/{cfg.num_experts}")
    if not ok:
        raise SystemExit("torch check FAILED: non-finite logits")


# ----------------------------------------------------------------------------------------------------------------
# GGUF
# ----------------------------------------------------------------------------------------------------------------

def converter_child(argv: list) -> None:
    """`make_bench_moe.py _convert SRC MODEL_DIR OUTTYPE OUTFILE`: the vendored converter with the pre-tokenizer
    override on LLaDAMoEModel (as make_gguf.py's converter_child does on LLaDAModel)."""
    src, model_dir, outtype, outfile = argv
    sys.path.insert(0, src)
    sys.path.insert(1, os.path.join(src, "gguf-py"))
    import conversion.llada as llada_mod  # noqa: E402  (the vendored converter package)
    from make_gguf import _is_plain_gpt2_bytelevel  # noqa: E402

    cls = llada_mod.LLaDAMoEModel
    original = cls.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            if _is_plain_gpt2_bytelevel(str(self.dir_model)):
                print("make_bench_moe: pre-tokenizer hash not listed; tokenizer.json is plain GPT-2 byte-level "
                      "BPE, answering 'gpt-2'", file=sys.stderr, flush=True)
                return "gpt-2"
            raise

    cls.get_vocab_base_pre = get_vocab_base_pre
    import convert_hf_to_gguf  # noqa: E402

    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", outtype, "--outfile", outfile]
    convert_hf_to_gguf.main()


def run(cmd: list, what: str, env=None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-5000:] + r.stderr[-20000:])
        raise SystemExit(f"{what} failed ({r.returncode})")
    return r


def tool_env(build: str) -> dict:
    bindir = os.path.join(build, "bin")
    return dict(os.environ, LD_LIBRARY_PATH=bindir + os.pathsep + os.environ.get("LD_LIBRARY_PATH", ""))


def import_gguf(src: str):
    import make_gguf

    return make_gguf.import_gguf(src)


def check_metadata(gguf, path: str, cfg: dict, tok_cfg: dict, tok: dict) -> dict:
    import make_gguf

    meta = make_gguf.read_metadata(gguf, path)
    a = "llada-moe"
    want = {
        "general.architecture": a,
        f"{a}.block_count": cfg["num_hidden_layers"],
        f"{a}.context_length": cfg["max_position_embeddings"],
        f"{a}.embedding_length": cfg["hidden_size"],
        f"{a}.feed_forward_length": cfg["dense_intermediate_size"],
        f"{a}.expert_feed_forward_length": cfg["expert_intermediate_size"],
        f"{a}.attention.head_count": cfg["num_attention_heads"],
        f"{a}.attention.head_count_kv": cfg["num_key_value_heads"],
        f"{a}.expert_count": cfg["num_experts"],
        f"{a}.expert_used_count": cfg["num_experts_per_tok"],
        f"{a}.attention.causal": False,
        "diffusion.shift_logits": False,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.bos_token_id": BOS_ID,
        "tokenizer.ggml.eos_token_id": 602,
        "tokenizer.ggml.padding_token_id": 602,
        "tokenizer.ggml.mask_token_id": cfg["mask_token_id"],
        "tokenizer.chat_template": tok_cfg["chat_template"],
    }
    bad = [f"{k} = {meta.get(k)!r}, expected {v!r}" for k, v in want.items() if meta.get(k) != v]
    for k, v in ((f"{a}.rope.freq_base", cfg["rope_theta"]),
                 (f"{a}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])):
        if k not in meta or abs(meta[k] - v) > 1e-6 * abs(v):
            bad.append(f"{k} = {meta.get(k)!r}, expected {v!r}")
    tokens = meta.get("tokenizer.ggml.tokens") or []
    vocab = dict(tok["model"]["vocab"])
    for x in tok["added_tokens"]:
        vocab[x["content"]] = x["id"]
    if len(tokens) != cfg["vocab_size"]:
        bad.append(f"{len(tokens)} tokens, expected {cfg['vocab_size']}")
    else:
        bad += [f"token {i} = {tokens[i]!r}, expected {t!r}" for t, i in vocab.items() if tokens[i] != t][:5]
        bad += [f"token {i} = {tokens[i]!r}" for i in range(len(vocab), len(tokens)) if tokens[i] != f"[PAD{i}]"][:5]
    if bad:
        raise SystemExit(f"{path}: metadata check FAILED:\n  " + "\n  ".join(bad))
    return meta


def gguf_name_of(ckpt_name: str):
    """Checkpoint name -> (GGUF name, expert index or None)."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if ckpt_name in top:
        return top[ckpt_name], None
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", ckpt_name)
    n, rest = m.group(1), m.group(2)
    per = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
           "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
           "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate": "ffn_gate_inp"}
    if rest in per:
        return f"blk.{n}.{per[rest]}.weight", None
    m = re.fullmatch(r"mlp\.experts\.(\d+)\.(gate|up|down)_proj", rest)
    return f"blk.{n}.ffn_{m.group(2)}_exps.weight", int(m.group(1))


def check_f32_roundtrip(gguf, path: str, st_path: str) -> int:
    """Every tensor of the F32 file equals the checkpoint's bit for bit (experts stacked in expert order)."""
    from safetensors import safe_open

    r = gguf.GGUFReader(path)
    stored = {t.name: t for t in r.tensors}
    seen = set()
    with safe_open(st_path, framework="numpy") as f:
        for name in f.keys():
            gname, e = gguf_name_of(name)
            t = stored.get(gname)
            if t is None:
                raise SystemExit(f"{path}: no tensor {gname} for {name}")
            if t.tensor_type.name != "F32":
                raise SystemExit(f"{path}: {gname} is {t.tensor_type.name}, not F32")
            data = np.asarray(t.data).reshape([int(x) for x in reversed(t.shape)])
            got = data if e is None else data[e]
            if not np.array_equal(got, f.get_tensor(name)):
                raise SystemExit(f"{path}: {gname}{'' if e is None else f'[{e}]'} differs from {name}")
            seen.add(gname)
    extra = set(stored) - seen
    if extra:
        raise SystemExit(f"{path}: tensors not from the checkpoint: {sorted(extra)[:5]}")
    return len(stored)


def describe_types(gguf, path: str) -> str:
    types = {}
    for x in gguf.GGUFReader(path).tensors:
        kind = re.sub(r"^blk\.\d+\.", "blk.N.", x.name)
        types.setdefault(x.tensor_type.name, set()).add(kind)
    return "; ".join(f"{ty}: {', '.join(sorted(v))}" for ty, v in sorted(types.items()))


def diffusion_run(exe: str, path: str, threads: int, env: dict) -> dict:
    cmd = [exe, "-m", path] + DIFFUSION_ARGS + ["-t", str(threads), "--no-log-prefix", "--no-log-timestamps",
                                                 "--log-colors", "off"]
    for attempt in range(5):
        t0 = time.time()
        r = run(cmd, f"llama-diffusion-cli on {path}", env)
        wall = time.time() - t0
        text = r.stdout + r.stderr
        m = re.search(r"total time: ([0-9.]+)\s*ms", text)
        if m:
            return {"total_time_ms": float(m.group(1)), "wall_s": round(wall, 2), "attempts": attempt + 1}
    raise SystemExit(f"llama-diffusion-cli printed no 'total time:' line in 5 runs on {path}:\n{text[-3000:]}")


def step_gguf(args, out: str, cfg: dict, stamp: dict) -> bool:
    """Returns whether any GGUF file was (re)made."""
    gdir = args.gguf_dir
    os.makedirs(gdir, exist_ok=True)
    base = os.path.basename(os.path.normpath(out))
    paths = {t: os.path.join(gdir, f"{base}-{t}.gguf") for t in GGUF_TYPES}
    src_sha = stamp["safetensors"]["sha256"]
    recs = stamp.get("gguf") or {}
    if all(file_matches(paths[t], recs.get(t)) and recs[t].get("source_sha256") == src_sha for t in GGUF_TYPES):
        for t in GGUF_TYPES:
            log(f"{paths[t]}: up to date ({fmt_bytes(os.path.getsize(paths[t]))}), skipped")
        return False
    src, build = args.llama_src, args.llama_build
    if not src or not os.path.isfile(os.path.join(src, "convert_hf_to_gguf.py")):
        raise SystemExit(f"--llama-src (or LLAMA_CPP_SRC) must be llama.cpp's source dir, not {src!r}")
    for exe in ("llama-quantize", "llama-diffusion-cli"):
        if not os.path.isfile(os.path.join(build, "bin", exe)):
            raise SystemExit(f"--llama-build (or LLAMA_CPP_BUILD) must hold bin/{exe}: {build!r}")
    env = tool_env(build)
    stamp.pop("gguf", None)
    stamp.pop("diffusion_check", None)
    write_stamp(out, stamp)
    for p in paths.values():
        if os.path.exists(p):
            os.remove(p)
    gguf = import_gguf(src)

    # 1. convert
    t0 = time.time()
    tmp = os.path.join(gdir, f".{base}-f32.tmp.gguf")
    cmd = [sys.executable, os.path.abspath(__file__), "_convert", src, os.path.abspath(out), "f32", tmp]
    log("  " + " ".join(cmd))
    r = run(cmd, "convert_hf_to_gguf.py")
    dup = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if "Duplicated key" in ln]
    log(f"  converted in {time.time() - t0:.1f}s: {fmt_bytes(os.path.getsize(tmp))}"
        + "".join(f"\n    converter: {ln}" for ln in dup))

    # 2. the mask id
    mask_key = "tokenizer.ggml.mask_token_id"
    before = gguf.GGUFReader(tmp).get_field(mask_key).contents()
    setter = os.path.join(src, "gguf-py", "gguf", "scripts", "gguf_set_metadata.py")
    cmd = [sys.executable, setter, tmp, mask_key, str(cfg["mask_token_id"]), "--force"]
    log(f"  {mask_key} = {before} as converted; " + " ".join(cmd))
    run(cmd, "gguf_set_metadata.py")
    after = gguf.GGUFReader(tmp).get_field(mask_key).contents()
    if after != cfg["mask_token_id"]:
        raise SystemExit(f"{tmp}: {mask_key} = {after} after the rewrite")
    os.replace(tmp, paths["f32"])

    # 3. quantize
    for t, q in QUANT_NAMES.items():
        t0 = time.time()
        qtmp = os.path.join(gdir, f".{base}-{t}.tmp.gguf")
        cmd = [os.path.join(build, "bin", "llama-quantize"), paths["f32"], qtmp, q, str(args.threads)]
        log("  " + " ".join(cmd))
        run(cmd, f"llama-quantize {q}", env)
        os.replace(qtmp, paths[t])
        log(f"  quantized {q} in {time.time() - t0:.1f}s: {fmt_bytes(os.path.getsize(paths[t]))}")

    # 4. checks
    with open(os.path.join(out, "tokenizer_config.json")) as f:
        tok_cfg = json.load(f)
    with open(os.path.join(out, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    for t in GGUF_TYPES:
        meta = check_metadata(gguf, paths[t], cfg, tok_cfg, tok)
        log(f"  {os.path.basename(paths[t])}: metadata checked (file_type {meta['general.file_type']}); "
            f"{describe_types(gguf, paths[t])}")
    t0 = time.time()
    n = check_f32_roundtrip(gguf, paths["f32"], os.path.join(out, "model.safetensors"))
    log(f"  {os.path.basename(paths['f32'])}: all {n} tensors equal the checkpoint bit for bit "
        f"({time.time() - t0:.1f}s)")
    version = run([os.path.join(build, "bin", "llama-diffusion-cli"), "--version"], "llama-diffusion-cli --version",
                  env)
    stamp["gguf"] = {t: {"bytes": os.path.getsize(p), "sha256": sha256_file(p), "source_sha256": src_sha}
                     for t, p in paths.items()}
    stamp["gguf"]["llama_cpp"] = " ".join((version.stdout + version.stderr).split())
    stamp["gguf"]["mask_token_id_as_converted"] = before
    write_stamp(out, stamp)
    return True


def step_diffusion_check(args, out: str, stamp: dict) -> None:
    base = os.path.basename(os.path.normpath(out))
    exe = os.path.join(args.llama_build, "bin", "llama-diffusion-cli")
    env = tool_env(args.llama_build)
    res = {"command": "llama-diffusion-cli -m FILE " + " ".join(
        f'"{a}"' if a == "hello" else a for a in DIFFUSION_ARGS) + f" -t {args.threads}", "files": {}}
    for t in ("q8_0", "q4_k_m"):
        p = os.path.join(args.gguf_dir, f"{base}-{t}.gguf")
        r = diffusion_run(exe, p, args.threads, env)
        res["files"][t] = r
        log(f"  llama-diffusion-cli {os.path.basename(p)}: total time {r['total_time_ms']:.2f} ms "
            f"(wall {r['wall_s']:.1f}s including the load" + ("" if r["attempts"] == 1 else f", {r['attempts']} tries")
            + ")")
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    stamp["diffusion_check"] = res
    write_stamp(out, stamp)


# ----------------------------------------------------------------------------------------------------------------

def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_convert":
        converter_child(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", nargs="?", default=DEFAULT_OUT, help="default bench-models/moe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedding-std", type=float, default=EMBEDDING_STD,
                    help=f"std of model.embed_tokens.weight (default {EMBEDDING_STD}; every other matrix {INIT_STD})")
    ap.add_argument("--gguf", action=argparse.BooleanOptionalAction, default=True,
                    help="also write the GGUF files (F32, Q8_0, Q4_K_M) with llama.cpp's converter and llama-quantize")
    ap.add_argument("--gguf-dir", default=None, help="default OUT_DIR/../gguf")
    ap.add_argument("--llama-src", default=os.environ.get("LLAMA_CPP_SRC", DEFAULT_LLAMA_SRC),
                    help="llama.cpp source dir (vendor/llama.cpp of the sdist); env LLAMA_CPP_SRC")
    ap.add_argument("--llama-build", default=os.environ.get("LLAMA_CPP_BUILD", DEFAULT_LLAMA_BUILD),
                    help="CMake build dir with bin/llama-quantize and bin/llama-diffusion-cli; env LLAMA_CPP_BUILD")
    ap.add_argument("--diffusion-check", action=argparse.BooleanOptionalAction, default=None,
                    help="run llama-diffusion-cli on the Q8_0 and Q4_K_M files (default: when they were just made)")
    ap.add_argument("--torch-check", action="store_true",
                    help="load the checkpoint into tests/fixtures/llada_moe_torch.py and run one forward pass")
    ap.add_argument("--force", action="store_true", help="regenerate even when the outputs match the request")
    ap.add_argument("--threads", type=int, default=2, help="threads for llama-quantize, llama-diffusion-cli, torch")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    t_start = time.time()
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    args.gguf_dir = os.path.abspath(args.gguf_dir or os.path.join(os.path.dirname(out), "gguf"))
    args.llama_src = os.path.abspath(args.llama_src) if args.llama_src else None
    args.llama_build = os.path.abspath(args.llama_build)
    arch = TINY_ARCH if args.tiny else BENCH_ARCH
    cfg = build_config(arch)
    want = {"generator_version": GENERATOR_VERSION, "seed": args.seed, "dtype": "f32",
            "init": {"matrix_std": INIT_STD, "embedding_std": args.embedding_std, "norm_weight": 1.0,
                     "rng": "numpy PCG64 per tensor, SeedSequence([seed, crc32(name)]), standard_normal float32"},
            "config": cfg}

    cfg_path = os.path.join(out, "config.json")
    st_path = os.path.join(out, "model.safetensors")
    stamp = {} if args.force else read_stamp(out)
    cfg_on_disk = open(cfg_path).read() if os.path.isfile(cfg_path) else None
    tok_ok = all(os.path.isfile(os.path.join(out, fn)) and open(os.path.join(out, fn), "rb").read()
                 == open(os.path.join(TOKENIZER_SRC, fn), "rb").read() for fn in TOKENIZER_FILES)

    weights_ok = (stamp.get("request") == want and cfg_on_disk == config_text(cfg) and tok_ok
                  and file_matches(st_path, stamp.get("safetensors")))
    made = False
    if weights_ok:
        log(f"{st_path}: up to date ({fmt_bytes(os.path.getsize(st_path))}, {stamp['n_params']:,} parameters), "
            f"skipped")
    else:
        t0 = time.time()
        p = os.path.join(out, STAMP_NAME)
        if os.path.exists(p):
            os.remove(p)
        for fn in TOKENIZER_FILES:
            shutil.copyfile(os.path.join(TOKENIZER_SRC, fn), os.path.join(out, fn))
        with open(cfg_path, "w") as f:
            f.write(config_text(cfg))
        info = write_safetensors(st_path, tensor_shapes(cfg), args.seed, args.embedding_std)
        t_w = time.time() - t0
        stamp = {"request": want, "n_params": info["n_params"], "n_active_params": active_params(cfg),
                 "safetensors": {"bytes": os.path.getsize(st_path), "sha256": sha256_file(st_path)}}
        write_stamp(out, stamp)
        made = True
        log(f"wrote {cfg_path}, {st_path} and the tokenizer files: {info['n_params']:,} parameters "
            f"({stamp['n_active_params']:,} active per token) in {info['n_tensors']} tensors, float32, "
            f"{fmt_bytes(os.path.getsize(st_path))}, in {t_w:.1f}s (+{time.time() - t0 - t_w:.1f}s hashing)")

    if args.torch_check:
        t0 = time.time()
        torch_check(out, args.threads)
        log(f"torch check took {time.time() - t0:.1f}s")

    if args.gguf:
        log("== gguf")
        made = step_gguf(args, out, cfg, stamp) or made
        if args.diffusion_check or (args.diffusion_check is None and made):
            step_diffusion_check(args, out, stamp)
    log(f"done in {time.time() - t_start:.1f}s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
