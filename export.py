#!/usr/bin/env python3
"""Convert checkpoints and tokenizers into the files run.c reads.

    python3 export.py OUT.bin --hf DIR              Hugging Face directory (Llama, Mistral,
                                                    Qwen2; its tokenizer goes to tokenizer.bin
                                                    beside OUT.bin)
    python3 export.py OUT.bin --gguf FILE.gguf      GGUF (llama.cpp) in any common type; Q8_0,
                                                    Q4_0, Q4_K and Q6_K matrices kept as they are
    python3 export.py OUT.bin --llama2c IN.bin      llama2.c legacy model file
    python3 export.py OUT.bin --tokenizer PATH      tokenizer.model (SentencePiece or
                                                    tiktoken) or tokenizer.json

Needs only Python 3 and numpy. The file formats are described in README.md
(section "File formats") and at the top of the matching sections of run.c.
"""

import argparse
import json
import math
import os
import re
import struct
import sys

import numpy as np

MODEL_MAGIC = b"RUNC"
MODEL_VERSION = 3  # 2: a type per matrix (1: one type for all); 3: q8_0/q4_0 scales beside their blocks
MODEL_HEADER_SIZE = 256
TENSOR_ALIGN = 64
MAX_EOS = 8
WEIGHT_TYPES = {"fp32": 0, "q8_0": 1, "q4_0": 2, "q4_k": 3, "q6_k": 4}
QK = 32  # values per quantized block
QGROUP = 8  # blocks per group of a q8_0/q4_0 row: their fp16 scales, then the blocks
FLAG_TIED_CLASSIFIER, FLAG_QKV_BIAS, FLAG_QK_NORM, FLAG_POST_NORMS, FLAG_ROPE_FACTORS = 1, 2, 4, 8, 16

TOKENIZER_MAGIC = b"RUNT"
TOKENIZER_VERSION = 1
TOKENIZER_HEADER_SIZE = 64
TOKF_DUMMY_PREFIX, TOKF_ADD_BOS, TOKF_REMOVE_EXTRA_WS, TOKF_IGNORE_MERGES, TOKF_NFC = 1, 2, 4, 8, 16
KIND_SENTENCEPIECE, KIND_BYTE_LEVEL = 1, 2
PRETOK_NONE, PRETOK_LLAMA3, PRETOK_QWEN2, PRETOK_GPT2, PRETOK_SMOLLM, PRETOK_O200K = 0, 1, 2, 3, 4, 5
TOK_NORMAL, TOK_UNKNOWN, TOK_CONTROL, TOK_USER_DEFINED, TOK_UNUSED, TOK_BYTE = 1, 2, 3, 4, 5, 6


class ExportError(Exception):
    """A problem with the input, reported as one line and exit status 1."""


# ---------------------------------------------------------------------------
# Writing the model file

def model_header(cfg, weight_type=0):
    """The 256-byte header; cfg holds the fields of run.c's FileHeader.
    weight_type: the type most matrices have (the per-matrix types follow the
    header, in type_table)."""
    eos = list(cfg["eos_ids"])
    if len(eos) > MAX_EOS:
        raise ExportError(f"at most {MAX_EOS} EOS ids are supported, got {len(eos)}")
    rope = cfg.get("rope_scaling") or {}
    longrope = cfg.get("longrope") or {}
    flags = (FLAG_TIED_CLASSIFIER if cfg["tied"] else 0) | (FLAG_QKV_BIAS if cfg.get("qkv_bias") else 0) | \
        (FLAG_QK_NORM if cfg.get("qk_norm") else 0) | (FLAG_POST_NORMS if cfg.get("post_norms") else 0) | \
        (FLAG_ROPE_FACTORS if longrope else 0)
    head = struct.pack(
        "<4sI8i4fif3ii",
        MODEL_MAGIC, MODEL_VERSION,
        cfg["dim"], cfg["hidden_dim"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"],
        cfg["head_dim"], cfg["vocab_size"], cfg["seq_len"],
        cfg["rope_theta"], rope.get("factor", 0.0), rope.get("low_freq_factor", 0.0),
        rope.get("high_freq_factor", 0.0), int(rope.get("original_seq_len", longrope.get("original_seq_len", 0))),
        cfg["norm_eps"], flags, weight_type, cfg["bos_id"], len(eos))
    head += struct.pack(f"<{MAX_EOS}i", *(eos + [0] * (MAX_EOS - len(eos))))
    head += struct.pack("<i", cfg.get("sliding_window") or 0)
    # Granite's multipliers; 0 stands for the plain transformer's (1, 1 / sqrt(head_dim), 1, 1)
    head += struct.pack("<4f", *(cfg.get(k) or 0.0 for k in ("embedding_scale", "attention_scale", "residual_scale",
                                                             "logit_scale")))
    # Gemma's: the local layers' RoPE base, linear RoPE scaling of the global layers, the activation
    # (0 SiLU, 1 GELU tanh), soft-capping of the attention scores and of the logits; 0 for none
    head += struct.pack("<2fi2f", cfg.get("rope_local_theta") or 0.0, cfg.get("rope_linear_factor") or 0.0,
                        ACTIVATIONS[cfg.get("activation", "silu")], cfg.get("attn_softcap") or 0.0,
                        cfg.get("final_softcap") or 0.0)
    # Phi-3's: the rotated width of each head (0: all), LongRoPE's attention factor (0: 1)
    head += struct.pack("<if", cfg.get("rope_dim") or 0, longrope.get("attn_factor", 0.0))
    # the model's recommended sampling (generation_config.json): which it gives, then the values
    gen = cfg.get("generation") or {}
    given = sum(bit for key, bit in GEN_BITS.items() if key in gen)
    head += struct.pack("<I4fi", given, *(float(gen.get(k, 0.0)) for k in ("temperature", "top_p", "min_p",
                                                                             "repetition_penalty")),
                        int(gen.get("top_k", 0)))
    assert len(head) == 184
    return head + bytes(MODEL_HEADER_SIZE - len(head))


def type_table(types):
    """Version 2: one byte per matrix (its WEIGHT_TYPES value), in file order,
    padded with zeros to a multiple of 64 bytes."""
    table = bytes(WEIGHT_TYPES[t] for t in types)
    return table + bytes(-len(table) % TENSOR_ALIGN)


LAYER_NO_ROPE, LAYER_SLIDING = 1, 2
GEN_BITS = {"temperature": 1, "top_p": 2, "top_k": 4, "min_p": 8, "repetition_penalty": 16}


def recommended_sampling(gc, where):
    """The sampling values a generation_config.json recommends, for chat's
    defaults: temperature, top_p, top_k, min_p, repetition_penalty (checked);
    do_sample false means greedy, as in transformers' generate()."""
    if not gc:
        return {}
    limits = {"temperature": (0, 1e6), "top_p": (0, 1), "top_k": (0, 1 << 20), "min_p": (0, 1),
              "repetition_penalty": (1e-3, 1e3)}
    out = {}
    for key, (lo, hi) in limits.items():
        v = gc.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise ExportError(f"{where}: generation_config.json's {key} is {v!r} (expected {lo} to {hi})")
        out[key] = v
    if gc.get("do_sample") is False:
        out["temperature"] = 0.0
    return out
ACTIVATIONS = {"silu": 0, "gelu_tanh": 1}


def layer_table(cfg):
    """Version 2: one byte of LAYER_* bits per layer, padded to 64 bytes:
    layers without RoPE (no_rope_layers), and layers that attend to the last
    sliding_window positions with the local RoPE base (sliding_layers)."""
    no_rope, sliding = set(cfg.get("no_rope_layers") or ()), set(cfg.get("sliding_layers") or ())
    if sliding and not cfg.get("sliding_window"):
        raise ExportError("sliding-window layers without a sliding_window")
    table = bytes((LAYER_NO_ROPE if i in no_rope else 0) | (LAYER_SLIDING if i in sliding else 0)
                  for i in range(cfg["n_layers"]))
    return table + bytes(-len(table) % TENSOR_ALIGN)


def tensor_order(cfg):
    """Names and shapes of the tensors, in the order of the file."""
    d, h, q, kv = cfg["dim"], cfg["hidden_dim"], cfg["n_heads"] * cfg["head_dim"], cfg["n_kv_heads"] * cfg["head_dim"]
    order = []
    if cfg.get("longrope"):  # LongRoPE's per-frequency factors, short then long
        half = (cfg.get("rope_dim") or cfg["head_dim"]) // 2
        order += [("rope_short_factors", (half,)), ("rope_long_factors", (half,))]
    order.append(("tok_embeddings", (cfg["vocab_size"], d)))
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        order.append((p + "attention_norm", (d,)))
        for w, rows in (("q", q), ("k", kv), ("v", kv)):
            order.append((p + "w" + w, (rows, d)))
            if cfg.get("qkv_bias"):
                order.append((p + "b" + w, (rows,)))
        if cfg.get("qk_norm"):
            order += [(p + "q_norm", (cfg["head_dim"],)), (p + "k_norm", (cfg["head_dim"],))]
        order.append((p + "wo", (d, q)))
        post = [(p + "post_attn_norm", (d,))] if cfg.get("post_norms") else []
        order += post + [(p + "ffn_norm", (d,)), (p + "w1", (h, d)), (p + "w2", (d, h)), (p + "w3", (h, d))]
        if cfg.get("post_norms"):
            order.append((p + "post_ffn_norm", (d,)))
    order.append(("norm", (d,)))
    if not cfg["tied"]:
        order.append(("output", (cfg["vocab_size"], d)))
    return order


def quantize(t, dtype):
    """A matrix as run.c's q8_0 or q4_0: rows padded with zeros to whole blocks
    of 32; (values, fp16 scales). q8_0: scale = max|x| / 127, value =
    round(x / scale). q4_0: scale = m / -8 with m the value of largest
    magnitude, value = round(x / scale) + 8 in [0, 15], two per byte (value j
    of a block in the low nibble of byte j, value j + 16 in its high nibble).
    q4_k and q6_k: one array of ggml's blocks (quantize_k below)."""
    if dtype in K_TYPES:
        return [quantize_k(t, dtype)]
    rows, cols = t.shape
    padded = -(-cols // QK) * QK
    blocks = np.zeros((rows, padded), dtype=np.float32)
    blocks[:, :cols] = t
    blocks = blocks.reshape(rows, padded // QK, QK)
    if dtype == "q8_0":
        scale = (np.abs(blocks).max(axis=2) / 127).astype(np.float16)
        inv = np.divide(1.0, scale.astype(np.float32), out=np.zeros(scale.shape, np.float32), where=scale != 0)
        values = np.clip(np.rint(blocks * inv[:, :, None]), -127, 127).astype(np.int8)
        return values.reshape(rows, padded), scale
    idx = np.abs(blocks).argmax(axis=2)
    extreme = np.take_along_axis(blocks, idx[:, :, None], axis=2)[:, :, 0]
    scale = (extreme / -8).astype(np.float16)
    inv = np.divide(1.0, scale.astype(np.float32), out=np.zeros(scale.shape, np.float32), where=scale != 0)
    q = np.clip(np.rint(blocks * inv[:, :, None]) + 8, 0, 15).astype(np.uint8)
    packed = q[:, :, :QK // 2] | (q[:, :, QK // 2:] << 4)
    return packed.reshape(rows, padded // 2), scale


def dequantize(values, scale, dtype, cols):
    """The floats a quantized matrix stands for (for tests and measurements)."""
    rows = values.shape[0]
    if dtype in K_TYPES:  # values: the blocks; scale unused
        ggml = {"q4_k": GGML_Q4_K, "q6_k": GGML_Q6_K}[dtype]
        return ggml_dequantize(np.ascontiguousarray(values).tobytes(), ggml, (rows, cols))
    s = scale.astype(np.float32)[:, :, None]
    if dtype == "q8_0":
        q = values.reshape(rows, -1, QK).astype(np.float32)
    else:
        p = values.reshape(rows, -1, QK // 2)
        q = np.concatenate([p & 15, p >> 4], axis=2).astype(np.float32) - 8
    return (q * s).reshape(rows, -1)[:, :cols]


class GGMLTensor:
    """A tensor kept in its GGUF encoding (ggml type, raw bytes), so that
    types run.c shares with ggml go into the model file as they are."""

    def __init__(self, name, ttype, shape, raw):
        self.name, self.ttype, self.shape, self.raw = name, ttype, tuple(shape), raw

    def numpy(self):
        return ggml_dequantize(self.raw, self.ttype, self.shape)

    def blocks(self):
        """(rows, blocks per row, bytes per block) uint8"""
        _, per_block, block_bytes, _ = GGML_TYPES[self.ttype]
        return np.frombuffer(self.raw, dtype=np.uint8).reshape(self.shape[0], -1, block_bytes)

    def row_bytes(self):
        """(rows, bytes per row) uint8: whole rows move in any encoding, bit for bit"""
        return np.frombuffer(self.raw, dtype=np.uint8).reshape(self.shape[0], -1)

    def rows(self, start, n):
        """Rows start .. start + n - 1 (the parts of a fused matrix), still encoded."""
        return GGMLTensor(self.name, self.ttype, (n,) + self.shape[1:],
                          np.ascontiguousarray(self.row_bytes()[start:start + n]))




def q4_k_m_type(name, n_layers):
    """llama.cpp's Q4_K_M mix: q6_k for the classifier, and for wv and w2 in
    the first and last eighth of the layers and every third one between;
    q4_k for the rest."""
    if name == "output":
        return "q6_k"
    if name.endswith((".wv", ".w2")):
        i = int(name.split(".")[1])
        if i < n_layers // 8 or i >= 7 * n_layers // 8 or (i - n_layers // 8) % 3 == 2:
            return "q6_k"
    return "q4_k"


def matrix_type(dtype, ttype, cols, name="", n_layers=1):
    """The weight type a matrix is written in: dtype if given (q4_k_m: the
    mix above), else (None) the source's own type (ttype: its ggml type, None
    for plain floats) where run.c has it, its nearest for other ggml types,
    and fp32 for floats. K types need rows of whole 256-value blocks."""
    if dtype == "q4_k_m":
        dtype = q4_k_m_type(name, n_layers)
    if dtype is None:
        dtype = GGML_NATIVE.get(ttype) or GGML_NEAREST.get(ttype) or "fp32"
    if dtype in K_TYPES and cols % QK_K:
        dtype = K_FALLBACK[dtype]
    return dtype


def check_block_scales(t, name):
    """Refuses a GGUF tensor whose blocks have NaN or infinite scales."""
    offsets = {GGML_Q8_0: (0,), GGML_Q4_0: (0,), GGML_Q4_K: (0, 2), GGML_Q6_K: (208,)}[t.ttype]
    b = t.blocks()
    for k in offsets:
        d = b[:, :, k:k + 2].copy().view("<f2")
        if not np.all(np.isfinite(d)):
            block = int(np.argmin(np.isfinite(d).ravel()))
            raise ExportError(f"tensor {name} ({ggml_type_name(t.ttype)}) has a NaN or infinite scale in block {block}")


def group_blocks(values, scales):
    """A q8_0 or q4_0 matrix as run.c's file holds it: each row's blocks in
    groups of QGROUP (the last group of a row has the blocks left over), each
    group its blocks' fp16 scales, then the blocks; (rows, n_blocks * (bytes
    per block + 2)) bytes. values: (rows, n_blocks * bytes per block), scales:
    (rows, n_blocks) fp16."""
    rows, n_blocks = scales.shape
    blocks = np.ascontiguousarray(values).view(np.uint8).reshape(rows, n_blocks, -1)
    scale_bytes = np.ascontiguousarray(scales, dtype="<f2").view(np.uint8).reshape(rows, n_blocks, 2)
    parts = []
    for first in range(0, n_blocks, QGROUP):
        group = slice(first, min(first + QGROUP, n_blocks))
        parts += [scale_bytes[:, group].reshape(rows, -1), blocks[:, group].reshape(rows, -1)]
    return np.concatenate(parts, axis=1)


def encode_matrix(src, dtype, name):
    """The arrays run.c reads for one matrix in weight type dtype."""
    if isinstance(src, GGMLTensor) and GGML_NATIVE.get(src.ttype) == dtype:
        check_block_scales(src, name)
        b = src.blocks()
        if dtype in K_TYPES:
            return [b.reshape(b.shape[0], -1)]
        return [group_blocks(b[:, :, 2:].reshape(b.shape[0], -1), b[:, :, :2].copy().view("<f2")[:, :, 0])]
    t = np.ascontiguousarray(src.numpy() if isinstance(src, GGMLTensor) else src, dtype="<f4")
    if not np.all(np.isfinite(t)):
        raise ExportError(f"tensor {name} has NaN or infinite values")
    if dtype == "fp32":
        return [t]
    if dtype in K_TYPES:
        return quantize(t, dtype)
    return [group_blocks(*quantize(t, dtype))]


def write_model(path, cfg, get_tensor, source_type=lambda name: None):
    """Streams the tensors to path one at a time. get_tensor(name) returns a
    float32 array in run.c's layout (q and k rows in interleaved RoPE order),
    or a GGMLTensor; source_type(name) its ggml type (None for floats).
    Matrices are written in cfg["dtype"] (None: each in the type matrix_type
    picks); norms and biases stay fp32."""
    order = tensor_order(cfg)
    dtype = cfg.get("dtype", "fp32")
    types = [matrix_type(dtype, source_type(name), shape[1], name, cfg["n_layers"])
             for name, shape in order if len(shape) == 2]
    most = max(WEIGHT_TYPES, key=types.count)
    summary = {}  # (source type, written type) -> count
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model_header(cfg, WEIGHT_TYPES[most]))
        f.write(type_table(types))
        f.write(layer_table(cfg))
        matrices = iter(types)
        for k, (name, shape) in enumerate(order):
            src = get_tensor(name)
            if tuple(src.shape) != shape:
                raise ExportError(f"tensor {name} has shape {tuple(src.shape)}, expected {shape}")
            if len(shape) == 1:
                parts = encode_matrix(src, "fp32", name)
            else:
                wtype = next(matrices)
                parts = encode_matrix(src, wtype, name)
                src_name = ggml_type_name(src.ttype) if isinstance(src, GGMLTensor) else "float32"
                summary[src_name, wtype] = summary.get((src_name, wtype), 0) + 1
            for part in parts:
                f.write(bytes((-f.tell()) % TENSOR_ALIGN))
                f.write(np.ascontiguousarray(part).astype(part.dtype.newbyteorder("<")).tobytes())
            progress(f"writing {path}: tensor {k + 1}/{len(order)} {name}")
    os.replace(tmp, path)
    for (src_name, wtype), n in summary.items():
        ttype = GGML_BY_NAME.get(src_name)
        if GGML_NATIVE.get(ttype) == wtype:
            how = f"kept as {wtype}, bit for bit"
        elif ttype is None or ttype in (GGML_F32, GGML_F16, GGML_BF16):
            how = f"written as {wtype}"
        else:
            how = f"dequantized, written as {wtype}"
        wanted = dtype or GGML_NATIVE.get(ttype) or GGML_NEAREST.get(ttype)
        if wtype in K_FALLBACK.values() and (wanted in K_TYPES or wanted == "q4_k_m"):
            how += f" ({wanted} needs rows of whole {QK_K}-value blocks)"
        progress_done(f"{n} {src_name} matri{'x' if n == 1 else 'ces'}: {how}")
    progress_done(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


# ---------------------------------------------------------------------------
# Quantizing to q4_k and q6_k (ggml's Q4_K and Q6_K blocks of 256 values)

QK_K = 256  # values per block of a K type
K_TYPES = ("q4_k", "q6_k")


def _least_squares_scale(x, q):
    """The scale s minimizing sum (x - s * q)^2 over the last axis."""
    qq = (q * q).sum(axis=-1)
    return np.divide((x * q).sum(axis=-1), qq, out=np.zeros(qq.shape, np.float32), where=qq > 0)


def _q6_groups(x):
    """Scales for groups of 16 values (..., 16) with values in [-32, 31]:
    the largest magnitude maps near -32, trying a few steps around it and
    keeping the scale (refit by least squares) of least squared error."""
    extreme = np.take_along_axis(x, np.abs(x).argmax(axis=-1)[..., None], axis=-1)
    best_err = np.full(x.shape[:-1], np.inf, np.float32)
    best = np.zeros(x.shape[:-1], np.float32)
    for step in np.linspace(-0.5, 1.0, 7, dtype=np.float32):
        inv = np.divide(-(32 - step), extreme, out=np.zeros(extreme.shape, np.float32), where=extreme != 0)
        q = np.clip(np.rint(x * inv), -32, 31)
        s = _least_squares_scale(x, q)
        err = ((x - s[..., None] * q) ** 2).sum(axis=-1)
        better = err < best_err
        best_err, best = np.where(better, err, best_err), np.where(better, s, best)
    return best


def _q4_groups(x):
    """Scale s >= 0 and offset m >= 0 for groups of 32 values (..., 32) with
    x ~ s * q - m, q in [0, 15] (ggml's Q4_K keeps the minimum at or below 0):
    a few ranges tried, each refit by least squares, the least error kept."""
    lo = np.minimum(x.min(axis=-1), 0)
    span = x.max(axis=-1) - lo
    best_err = np.full(x.shape[:-1], np.inf, np.float32)
    best_s, best_m = np.zeros(x.shape[:-1], np.float32), np.zeros(x.shape[:-1], np.float32)
    n = x.shape[-1]
    for steps in np.linspace(13.0, 17.0, 9, dtype=np.float32):
        s = span / steps
        inv = np.divide(1.0, s, out=np.zeros(s.shape, np.float32), where=s > 0)
        q = np.clip(np.rint((x - lo[..., None]) * inv[..., None]), 0, 15)
        # least squares for x ~ s * q + b: [qq q1; q1 n] [s b] = [qx x1]
        qq, q1, qx, x1 = (q * q).sum(-1), q.sum(-1), (q * x).sum(-1), x.sum(-1)
        det = qq * n - q1 * q1
        ok = det > 0
        s_fit = np.divide(qx * n - q1 * x1, det, out=s.copy(), where=ok)
        b_fit = np.divide(qq * x1 - q1 * qx, det, out=lo.copy(), where=ok)
        pos = b_fit > 0  # an offset above 0 is not allowed: refit the scale alone
        s_fit = np.where(pos, _least_squares_scale(x, q), s_fit)
        b_fit = np.where(pos, 0, b_fit)
        s_fit = np.maximum(s_fit, 0)
        err = ((x - (s_fit[..., None] * q + b_fit[..., None])) ** 2).sum(axis=-1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s, best_m = np.where(better, s_fit, best_s), np.where(better, -b_fit, best_m)
    return best_s, best_m


def _f16_bytes(column):
    """(n, 1) floats -> (n, 2) bytes of their fp16"""
    return column.astype("<f2").view(np.uint8)


def _super_scale(s, levels):
    """fp16 d with s ~ d * round(s / d), |round(s / d)| <= levels: (d as
    float32, the integer scales)."""
    d = (np.abs(s).max(axis=-1) / levels).astype(np.float16).astype(np.float32)
    inv = np.divide(1.0, d, out=np.zeros(d.shape, np.float32), where=d > 0)
    return d, np.clip(np.rint(s * inv[..., None]), -levels, levels)


def _quantize_q4_k(x):
    """(n, 256) floats -> (n, 144) Q4_K blocks."""
    g = x.reshape(-1, 8, 32)
    s, m = _q4_groups(g)
    d, sc = _super_scale(s, 63)
    dmin, mn = _super_scale(m, 63)
    step, off = d[:, None] * sc, dmin[:, None] * mn
    inv = np.divide(1.0, step, out=np.zeros(step.shape, np.float32), where=step > 0)
    q = np.clip(np.rint((g + off[..., None]) * inv[..., None]), 0, 15).astype(np.uint8)
    sc, mn = sc.astype(np.uint8), mn.astype(np.uint8)
    scales = np.concatenate([sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6), mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6),
                             (sc[:, 4:8] & 15) | ((mn[:, 4:8] & 15) << 4)], axis=1)
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(-1, 128)
    return np.concatenate([_f16_bytes(d[:, None]), _f16_bytes(dmin[:, None]), scales, qs], axis=1)


def _quantize_q6_k(x):
    """(n, 256) floats -> (n, 210) Q6_K blocks."""
    g = x.reshape(-1, 16, 16)
    s = _q6_groups(g)
    # the 16 scales as int8 of one fp16 d: the largest maps to -128 or 127
    extreme = np.take_along_axis(s, np.abs(s).argmax(axis=-1)[:, None], axis=-1)[:, 0]
    d = (extreme / -128).astype(np.float16).astype(np.float32)
    inv = np.divide(1.0, d, out=np.zeros(d.shape, np.float32), where=d != 0)
    sc = np.clip(np.rint(s * inv[:, None]), -128, 127)
    step = d[:, None] * sc
    inv = np.divide(1.0, step, out=np.zeros(step.shape, np.float32), where=step != 0)
    q = (np.clip(np.rint(g * inv[..., None]), -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 4, 32)
    ql = (q[:, :, 0:2] & 15) | ((q[:, :, 2:4] & 15) << 4)  # (n, half, 2, 32)
    qh = sum((q[:, :, j] >> 4) << (2 * j) for j in range(4)).astype(np.uint8)  # (n, half, 32)
    return np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), sc.astype(np.int8).view(np.uint8),
                           _f16_bytes(d[:, None])], axis=1)


def quantize_k(t, dtype, chunk_rows=256):
    """A matrix (rows, cols), cols a multiple of 256, as ggml Q4_K or Q6_K
    blocks: (rows, cols / 256 * block bytes) uint8. Quantized a few rows at a
    time, to keep the work arrays in cache."""
    rows, cols = t.shape
    assert cols % QK_K == 0
    fn, size = (_quantize_q4_k, 144) if dtype == "q4_k" else (_quantize_q6_k, 210)
    out = np.empty((rows, cols // QK_K * size), dtype=np.uint8)
    for r in range(0, rows, chunk_rows):
        part = np.asarray(t[r:r + chunk_rows], dtype=np.float32)
        out[r:r + chunk_rows] = fn(part.reshape(-1, QK_K)).reshape(part.shape[0], -1)
    return out


def progress(msg):
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + msg)
        sys.stderr.flush()


def progress_done(msg):
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    sys.stderr.write(msg + "\n")


# ---------------------------------------------------------------------------
# Hugging Face: config.json + safetensors

SAFETENSORS_DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2)}


class SafetensorsFile:
    """Reads tensors from one .safetensors file without loading the others:
    an 8-byte little-endian header length, a JSON header, then raw data."""

    def __init__(self, path):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ExportError(f"{path}: too small to be a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100_000_000:
                raise ExportError(f"{path}: header length {n} is larger than the file")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ExportError(f"{path}: header is not valid JSON: {e}") from None
        if not isinstance(header, dict):
            raise ExportError(f"{path}: header is not a JSON object")
        header.pop("__metadata__", None)
        self.data_start = 8 + n
        self.tensors = {}
        for name, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ExportError(f"{path}: tensor {name} has a malformed header entry") from None
            if dtype not in SAFETENSORS_DTYPES:
                raise ExportError(f"{path}: tensor {name} has dtype {dtype}; supported: F32, F16, BF16")
            itemsize = SAFETENSORS_DTYPES[dtype][1]
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if any(not isinstance(s, int) or s < 0 for s in shape) or end - begin != count * itemsize \
                    or begin < 0 or self.data_start + end > size:
                raise ExportError(f"{path}: tensor {name} has offsets {begin}..{end} that do not match "
                                  f"its shape {shape} or lie outside the file")
            self.tensors[name] = (dtype, tuple(shape), begin)

    def get(self, name):
        dtype, shape, begin = self.tensors[name]
        np_dtype = SAFETENSORS_DTYPES[dtype][0]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count == 0:
            return np.zeros(shape, dtype=np.float32)
        a = np.memmap(self.path, dtype=np_dtype, mode="r", offset=self.data_start + begin, shape=(count,))
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float32).reshape(shape)


def read_json(directory, name):
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise ExportError(f"{directory}: no {name}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise ExportError(f"{path}: not valid JSON: {e}") from None


# What each family's Hugging Face configuration class (LlamaConfig,
# MistralConfig, Qwen2Config, Gemma3TextConfig, ...) uses for a key that
# config.json leaves out.
GEMMA_DEFAULTS = {"rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_activation": "gelu_pytorch_tanh",
                  "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096}
HF_DEFAULTS = {
    "llama": {"rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
              "tie_word_embeddings": False, "hidden_act": "silu"},
    "mistral": {"rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 4096 * 32,
                "tie_word_embeddings": False, "hidden_act": "silu", "sliding_window": 4096},
    "qwen2": {"rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
              "tie_word_embeddings": False, "hidden_act": "silu"},
    "qwen3": {"rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
              "tie_word_embeddings": False, "hidden_act": "silu", "head_dim": 128},
    "smollm3": {"rope_theta": 2000000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
                "tie_word_embeddings": True, "hidden_act": "silu", "no_rope_layer_interval": 4},
    "granite": {"rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
                "tie_word_embeddings": False, "hidden_act": "silu", "embedding_multiplier": 1.0,
                "attention_multiplier": 1.0, "residual_multiplier": 1.0, "logits_scaling": 1.0},
    "phi3": {"rope_theta": 10000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
             "original_max_position_embeddings": 4096, "tie_word_embeddings": False, "hidden_act": "silu",
             "partial_rotary_factor": 1.0},
    "gemma2": {**GEMMA_DEFAULTS, "rope_theta": 10000.0, "max_position_embeddings": 8192, "vocab_size": 256000,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
    "gemma3_text": {**GEMMA_DEFAULTS, "rope_theta": 1000000.0, "max_position_embeddings": 131072,
                    "vocab_size": 262208, "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6},
}
ROPE_TYPES_REFUSED = ("dynamic", "yarn")  # known to transformers, not run by run.c
ACTIVATION_NAMES = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}


class HFConfig:
    """config.json as transformers reads it: keys looked up with the family's
    defaults (each default applied is said once), and RoPE from either form
    transformers writes: rope_theta + rope_scaling (before v5) or
    rope_parameters (v5: flat, or per layer type)."""

    def __init__(self, cfg, model_type, where):
        self.cfg, self.model_type, self.where = cfg, model_type, where

    def get(self, key):
        if key in self.cfg or key not in HF_DEFAULTS[self.model_type]:
            return self.cfg.get(key)
        value = HF_DEFAULTS[self.model_type][key]
        progress_done(f"note: config.json has no {key}: using {self.model_type}'s default {value}")
        self.cfg[key] = value  # said once
        return value

    def layer_kinds(self):
        """Each layer's attention: "full_attention" or "sliding_attention",
        from layer_types or, in older Gemma configs, the family's pattern
        (Gemma 2: every other layer from the first is local; Gemma 3: all but
        every sliding_window_pattern-th)."""
        n, where = self.cfg["num_hidden_layers"], self.where
        kinds = self.cfg.get("layer_types")
        if kinds is None and self.model_type == "gemma2":
            kinds = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
        elif kinds is None and self.model_type == "gemma3_text":
            every = self.get("sliding_window_pattern")
            kinds = ["sliding_attention" if (i + 1) % every else "full_attention" for i in range(n)]
        kinds = kinds or ["full_attention"] * n
        if not isinstance(kinds, list) or len(kinds) != n or set(kinds) - {"full_attention", "sliding_attention"}:
            raise ExportError(f"{where}: layer_types must list full_attention or sliding_attention for each of "
                              f"the {n} layers, got {kinds!r}")
        if "sliding_attention" in kinds and not self.model_type.startswith("gemma"):
            raise ExportError(f"{where}: local and global layers (layer_types) are not supported by {self.model_type}")
        return kinds

    def rope(self):
        """run.c's RoPE fields: rope_theta and the scaling of the global
        layers (rope_scaling for Llama 3.1's, rope_linear_factor), and
        rope_local_theta, the base of the sliding-window layers."""
        where, cfg = self.where, self.cfg
        kinds = self.layer_kinds()
        params = cfg.get("rope_parameters")
        local_params = None
        if params is None:  # the old keys
            theta, kind, scaling = self.get("rope_theta"), None, cfg.get("rope_scaling")
        else:
            if not isinstance(params, dict):
                raise ExportError(f"{where}: rope_parameters is not an object")
            if params and all(isinstance(v, dict) for v in params.values()):  # per layer type
                if set(params) - {"full_attention", "sliding_attention"} or "full_attention" not in params:
                    raise ExportError(f"{where}: rope_parameters per layer type must have full_attention "
                                      f"(and may have sliding_attention), got {sorted(params)}")
                local_params = params.get("sliding_attention")
                params = params["full_attention"]
            theta, scaling = params.get("rope_theta"), params
            self.scaling_fields(params)  # an unknown or refused rope_type is the first thing to say
            self.check_agrees("rope_theta", cfg.get("rope_theta"), theta)
            if cfg.get("rope_scaling"):
                if self.scaling_fields(cfg["rope_scaling"]) != self.scaling_fields(params):
                    raise ExportError(f"{where}: rope_scaling {cfg['rope_scaling']} and rope_parameters {params} "
                                      "disagree")
            if theta is None:  # in neither form: the family's default, said by get
                theta = self.get("rope_theta")
        out = {"rope_theta": float(theta), **self.scaling_fields(scaling)}
        if "sliding_attention" in kinds:
            local = (local_params or {}).get("rope_theta")
            if local_params is not None:
                if self.scaling_fields(local_params):
                    raise ExportError(f"{where}: rope scaling of the sliding-window layers is not supported")
                self.check_agrees("rope_local_base_freq", cfg.get("rope_local_base_freq"), local,
                                  "sliding_attention rope_theta")
            if local is None and self.model_type == "gemma3_text":  # its own key (or its default)
                local = self.get("rope_local_base_freq")
            if local is not None:  # else (Gemma 2) the local layers rotate as the others, scaling included
                out["rope_local_theta"] = float(local)
        return out

    def check_agrees(self, key, old, new, new_key=None):
        if old is not None and new is not None and old != new:
            raise ExportError(f"{self.where}: {key} {old} and rope_parameters' {new_key or key} {new} disagree")

    def scaling_fields(self, rs):
        """{} for no scaling, {"rope_scaling": {...}} for Llama 3.1's, or
        {"rope_linear_factor": f} for linear (positions divided by f)."""
        if not rs:
            return {}
        if not isinstance(rs, dict):
            raise ExportError(f"{self.where}: rope scaling {rs!r} is not an object")
        kind = rs.get("rope_type", rs.get("type", "default"))
        if kind == "default":
            return {}
        if kind in ROPE_TYPES_REFUSED:
            raise ExportError(f"{self.where}: rope_type {kind!r} is not implemented by run.c (it changes every "
                              "rotation, so leaving it out would give wrong logits); supported: default, llama3, "
                              "linear, longrope")
        try:
            if kind == "longrope":
                return {"longrope": self.longrope(rs)}
            if kind == "linear":
                return {"rope_linear_factor": float(rs["factor"])}
            if kind == "llama3":
                return {"rope_scaling": {"factor": float(rs["factor"]), "low_freq_factor": float(rs["low_freq_factor"]),
                                         "high_freq_factor": float(rs["high_freq_factor"]),
                                         "original_seq_len": int(rs["original_max_position_embeddings"])}}
        except (KeyError, TypeError, ValueError) as e:
            raise ExportError(f"{self.where}: {kind} rope scaling lacks or misstates {e}") from None
        raise ExportError(f"{self.where}: unknown rope_type {kind!r} (known: default, llama3, linear, longrope, "
                          f"{', '.join(ROPE_TYPES_REFUSED)})")

    def longrope(self, rs):
        """Phi-3's LongRoPE (transformers' _compute_longrope_parameters): a
        divisor per frequency, short_factor within the original context and
        long_factor beyond it, and cos and sin times an attention factor,
        sqrt(1 + ln(factor) / ln(original)) unless given, where factor is
        max_position_embeddings / original_max_position_embeddings unless given."""
        original = rs.get("original_max_position_embeddings") or self.get("original_max_position_embeddings")
        if not isinstance(original, int) or original <= 0:
            raise ExportError(f"{self.where}: longrope rope scaling needs original_max_position_embeddings")
        factor = rs.get("factor") or self.get("max_position_embeddings") / original
        attn = rs.get("attention_factor")
        if attn is None:
            attn = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
        short, long = [float(f) for f in rs["short_factor"]], [float(f) for f in rs["long_factor"]]
        if len(short) != len(long) or not all(f > 0 and math.isfinite(f) for f in short + long):
            raise ExportError(f"{self.where}: longrope short_factor and long_factor must be positive lists of "
                              "the same length")
        return {"short": short, "long": long, "original_seq_len": int(original), "attn_factor": float(attn)}

    def rope_dim(self, head_dim, params=None):
        """The rotated part of each head: partial_rotary_factor x head_dim (in
        config.json, or in rope_parameters as transformers v5 writes it)."""
        params = self.cfg.get("rope_parameters") if params is None else params
        factor = (params or {}).get("partial_rotary_factor") if isinstance(params, dict) else None
        factor = factor if factor is not None else self.get("partial_rotary_factor") or 1.0
        rope_dim = int(head_dim * factor)
        if not 0 < factor <= 1 or rope_dim % 2:
            raise ExportError(f"{self.where}: partial_rotary_factor {factor} gives {rope_dim} rotated values of "
                              f"{head_dim}: must be an even number")
        return rope_dim

    def activation(self):
        """The gate's activation: hidden_act, but Gemma's classes read
        hidden_activation (and ignore hidden_act)."""
        key = "hidden_activation" if self.model_type.startswith("gemma") else "hidden_act"
        value = self.get(key)
        if value not in ACTIVATION_NAMES:
            raise ExportError(f"{self.where}: {key} {value!r} is not supported for {self.model_type} "
                              f"(supported: {', '.join(ACTIVATION_NAMES)})")
        return ACTIVATION_NAMES[value]


class HuggingFaceCheckpoint:
    def __init__(self, directory):
        self.dir = directory
        self.hf = read_json(directory, "config.json")
        self.head_name = "lm_head.weight"
        self.files = {}  # tensor name -> SafetensorsFile
        index = os.path.join(directory, "model.safetensors.index.json")
        single = os.path.join(directory, "model.safetensors")
        if os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f).get("weight_map", {})
            opened = {}
            for name, fname in weight_map.items():
                if fname not in opened:
                    opened[fname] = SafetensorsFile(os.path.join(directory, fname))
                self.files[name] = opened[fname]
        elif os.path.isfile(single):
            st = SafetensorsFile(single)
            self.files = {name: st for name in st.tensors}
        else:
            raise ExportError(f"{directory}: no model.safetensors or model.safetensors.index.json "
                              "(only safetensors checkpoints are read)")
        self.config = self.make_config()

    def tensor(self, name):
        if name not in self.files or name not in self.files[name].tensors:
            raise ExportError(f"{self.dir}: tensor {name} is missing")
        return self.files[name].get(name)

    def unwrap(self):
        """A multimodal wrapper (Llava, Mistral3, ...) keeps its language model's
        config in text_config and its tensors under language_model: that model
        is exported, the rest (the vision tower, the projector) skipped."""
        hf = self.hf
        if "text_config" not in hf:
            return hf, "model."
        text = hf["text_config"]
        if not isinstance(text, dict) or "model_type" not in text:
            raise ExportError(f"{self.dir}: text_config has no model_type")
        for prefix in ("model.language_model.", "language_model.model."):
            if prefix + "embed_tokens.weight" in self.files:
                break
        else:
            raise ExportError(f"{self.dir}: a text_config, but no language_model tensors "
                              "(model.language_model.* or language_model.model.*)")
        head = "language_model.lm_head.weight" if prefix.startswith("language_model") else "lm_head.weight"
        if head in self.files:
            self.head_name = head
        skipped = sum(1 for n in self.files if not n.startswith(prefix) and n != head)
        archs = ", ".join(hf.get("architectures") or [hf.get("model_type", "?")])
        progress_done(f"note: {archs} is a multimodal wrapper: exporting its language model "
                      f"({text['model_type']}, text_config); {skipped} other tensors (vision tower, projector) skipped")
        return dict(text), prefix

    def make_config(self):
        raw, self.prefix = self.unwrap()
        model_type = raw.get("model_type")
        if model_type is None:
            model_type = "llama"
            progress_done("note: config.json has no model_type: reading it as llama")
        if model_type not in HF_DEFAULTS:
            raise ExportError(f"{self.dir}: model_type {model_type!r} is not supported "
                              f"(supported: {', '.join(HF_DEFAULTS)})")
        hf = HFConfig(raw, model_type, self.dir)
        activation = hf.activation()
        for flag in ("attention_bias", "mlp_bias"):
            if raw.get(flag):
                raise ExportError(f"{self.dir}: {flag} is not supported")
        if model_type in ("qwen2", "qwen3") and raw.get("use_sliding_window"):
            raise ExportError(f"{self.dir}: Qwen sliding-window attention is not supported")
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if not isinstance(hf.get(key), int) or raw[key] <= 0:
                raise ExportError(f"{self.dir}: config.json has no positive integer {key}")
        n_heads = raw["num_attention_heads"]
        dim = raw["hidden_size"]
        head_dim = hf.get("head_dim") or dim // n_heads  # Qwen3 states it (default 128); the others derive it
        n_kv_heads = raw.get("num_key_value_heads")
        if n_kv_heads is None:
            n_kv_heads = n_heads
            progress_done(f"note: config.json has no num_key_value_heads: using {model_type}'s default, "
                          f"num_attention_heads ({n_heads})")
        emb = self.prefix + "embed_tokens.weight"
        emb_rows = self.files[emb].tensors[emb][1][0] if emb in self.files else raw["vocab_size"]
        tied = bool(hf.get("tie_word_embeddings")) or self.head_name not in self.files
        eos = as_list(raw.get("eos_token_id", 2)) + as_list(self.generation_config().get("eos_token_id"))
        eos = list(dict.fromkeys(eos))  # unique, in order
        bos = raw.get("bos_token_id", 1)
        seq_len = hf.get("max_position_embeddings")
        rope = hf.rope()
        rope_dim = hf.rope_dim(head_dim)
        if "longrope" in rope and len(rope["longrope"]["short"]) != rope_dim // 2:
            raise ExportError(f"{self.dir}: longrope has {len(rope['longrope']['short'])} factors, expected "
                              f"{rope_dim // 2} (one per rotated pair of a head)")
        return {
            "model_type": model_type,
            "dim": dim,
            "hidden_dim": raw["intermediate_size"],
            "n_layers": raw["num_hidden_layers"],
            "n_heads": n_heads,
            "n_kv_heads": n_kv_heads,
            "head_dim": head_dim,
            "vocab_size": emb_rows,
            "seq_len": seq_len,
            **rope,
            "rope_dim": rope_dim,
            "norm_eps": float(hf.get("rms_norm_eps")),
            "tied": tied,
            "qkv_bias": model_type == "qwen2",
            "qk_norm": model_type in ("qwen3", "gemma3_text"),
            "activation": activation,
            **self.sliding_window(hf, seq_len),
            "no_rope_layers": self.no_rope_layers(hf, raw, model_type),
            **self.multipliers(hf, model_type),
            **self.gemma(hf, dim),
            "bos_id": -1 if bos is None else bos,
            "eos_ids": eos,
            "generation": recommended_sampling(self.generation_config(), self.dir),
        }

    def no_rope_layers(self, hf, raw, model_type):
        """SmolLM3's layers without RoPE: no_rope_layers[i] is 1 where layer i
        rotates q and k, 0 where it does not (by default every fourth layer,
        no_rope_layer_interval, does not). Returned: the indices without."""
        if model_type != "smollm3":
            return []
        if raw.get("use_sliding_window"):
            raise ExportError(f"{self.dir}: SmolLM3 sliding-window attention is not supported")
        flags = raw.get("no_rope_layers")
        n = raw["num_hidden_layers"]
        if flags is None:
            every = hf.get("no_rope_layer_interval")
            flags = [int((i + 1) % every != 0) for i in range(n)]
        if not isinstance(flags, list) or len(flags) != n or any(f not in (0, 1) for f in flags):
            raise ExportError(f"{self.dir}: no_rope_layers must be {n} values of 0 or 1, got {flags!r}")
        return [i for i, f in enumerate(flags) if not f]

    @staticmethod
    def sliding_window(hf, seq_len):
        """The sliding window and the layers it applies to: Mistral 7B v0.1's
        and Phi-3-mini-4k's every layer (4096 of 32768 positions; 2047 of
        4096), Gemma's local layers."""
        if hf.model_type in ("mistral", "phi3"):
            window = hf.get("sliding_window")
            window = window if window and window < seq_len else 0
            return {"sliding_window": window, "sliding_layers": list(range(hf.cfg["num_hidden_layers"])) if window else []}
        sliding = [i for i, kind in enumerate(hf.layer_kinds()) if kind == "sliding_attention"]
        if not sliding:
            return {}
        window = hf.get("sliding_window")
        if not isinstance(window, int) or window <= 0:
            raise ExportError(f"{hf.where}: sliding-window layers need a positive sliding_window, got {window!r}")
        return {"sliding_window": window, "sliding_layers": sliding}

    @staticmethod
    def gemma(hf, dim):
        """Gemma 2 and 3: the embedding scaled by sqrt(dim), attention scores
        by query_pre_attn_scalar^-0.5, each block's output normed before it
        joins the residual (post_norms), and Gemma 2's soft-capping of the
        attention scores and of the logits."""
        if not hf.model_type.startswith("gemma"):
            return {}
        return {"embedding_scale": math.sqrt(dim), "attention_scale": float(hf.get("query_pre_attn_scalar")) ** -0.5,
                "post_norms": True, "attn_softcap": float(hf.get("attn_logit_softcapping") or 0.0),
                "final_softcap": float(hf.get("final_logit_softcapping") or 0.0)}

    @staticmethod
    def multipliers(hf, model_type):
        """Granite's scalar multipliers (GraniteConfig's defaults are all 1,
        the attention's too: it replaces 1 / sqrt(head_dim))."""
        if model_type != "granite":
            return {}
        return {"embedding_scale": float(hf.get("embedding_multiplier")),
                "attention_scale": float(hf.get("attention_multiplier")),
                "residual_scale": float(hf.get("residual_multiplier")),
                "logit_scale": 1.0 / float(hf.get("logits_scaling"))}

    def generation_config(self):
        if not os.path.isfile(os.path.join(self.dir, "generation_config.json")):
            return {}
        return read_json(self.dir, "generation_config.json")

    def get(self, name):
        """Tensors under run.c's names, in run.c's layout."""
        c = self.config
        if name == "tok_embeddings":
            return self.tensor(self.prefix + "embed_tokens.weight")
        if name == "norm":
            return self.norm(self.tensor(self.prefix + "norm.weight"))
        if name == "output":
            return self.tensor(self.head_name)
        if name in ("rope_short_factors", "rope_long_factors"):
            return np.array(c["longrope"]["short" if name == "rope_short_factors" else "long"], dtype=np.float32)
        _, i, kind = name.split(".")
        p = f"{self.prefix}layers.{i}."
        if kind in ("wq", "wk", "bq", "bk"):
            heads = c["n_heads"] if kind[1] == "q" else c["n_kv_heads"]
            part = "weight" if kind[0] == "w" else "bias"
            w = self.projection(p, kind[1], part)
            return unpermute_rope(w, heads, c["head_dim"], c["rope_dim"])
        if kind == "bv":
            return self.tensor(p + "self_attn.v_proj.bias")
        if kind == "wv":
            return self.projection(p, "v", "weight")
        if kind in ("w1", "w3") and p + "mlp.gate_up_proj.weight" in self.files:  # Phi-3: gate and up in one
            gate_up = self.tensor(p + "mlp.gate_up_proj.weight")
            return gate_up[:c["hidden_dim"]] if kind == "w1" else gate_up[c["hidden_dim"]:]
        if kind in ("q_norm", "k_norm"):  # one head's weights: reordered like each head's rows
            return self.norm(unpermute_rope(self.tensor(f"{p}self_attn.{kind}.weight"), 1, c["head_dim"], c["rope_dim"]))
        hf_names = {"wo": "self_attn.o_proj.weight",
                    "w1": "mlp.gate_proj.weight", "w2": "mlp.down_proj.weight", "w3": "mlp.up_proj.weight",
                    "attention_norm": "input_layernorm.weight", "ffn_norm": "post_attention_layernorm.weight"}
        if c.get("post_norms"):  # Gemma's four norms: its post_attention_layernorm norms the attention output
            hf_names.update({"post_attn_norm": "post_attention_layernorm.weight",
                             "ffn_norm": "pre_feedforward_layernorm.weight",
                             "post_ffn_norm": "post_feedforward_layernorm.weight"})
        t = self.tensor(p + hf_names[kind])
        return self.norm(t) if kind.endswith("norm") else t

    def projection(self, p, which, part):
        """q, k or v's weight or bias; Phi-3 stores the three in one qkv_proj
        (q's rows, then k's, then v's)."""
        fused = f"{p}self_attn.qkv_proj.{part}"
        if fused not in self.files:
            return self.tensor(f"{p}self_attn.{which}_proj.{part}")
        c = self.config
        q, kv = c["n_heads"] * c["head_dim"], c["n_kv_heads"] * c["head_dim"]
        start, rows = {"q": (0, q), "k": (q, kv), "v": (q + kv, kv)}[which]
        t = self.tensor(fused)
        if t.shape[0] != q + 2 * kv:
            raise ExportError(f"{self.dir}: {fused} has {t.shape[0]} rows, expected {q + 2 * kv}")
        return t[start:start + rows]

    def norm(self, weight):
        """Gemma's RMSNorm multiplies by (1 + weight): stored as that product's
        factor, so run.c's x * weight computes it. PyTorch (Gemma3RMSNorm):
        output * (1.0 + self.weight.float())"""
        if not self.config["model_type"].startswith("gemma"):
            return weight
        return (1.0 + weight.astype(np.float32)).astype(np.float32)


def as_list(ids):
    return [] if ids is None else [ids] if isinstance(ids, int) else list(ids)


def unpermute_rope(w, n_heads, head_dim, rope_dim=None):
    """Hugging Face rotates the pairs (i, i + rope_dim/2) of each head; run.c
    rotates (2i, 2i + 1). Reorder the output rows of wq or wk so that row
    2i of a head is Hugging Face's row i and row 2i + 1 is its row i + rope_dim/2.
    rope_dim (default head_dim) is the rotated part of a head; rows past it
    (Phi-4-mini's partial rotary) stay where they are."""
    rows, rope_dim = w.shape[0], rope_dim or head_dim
    if rows != n_heads * head_dim:
        raise ExportError(f"attention weight has {rows} rows, expected {n_heads} heads x {head_dim}")
    cols = w.shape[1:]  # (dim,) for a weight, () for a bias
    heads = w.reshape(n_heads, head_dim, *cols)
    rotated = heads[:, :rope_dim].reshape(n_heads, 2, rope_dim // 2, *cols).swapaxes(1, 2)
    rotated = rotated.reshape(n_heads, rope_dim, *cols)
    return np.concatenate([rotated, heads[:, rope_dim:]], axis=1).reshape(rows, *cols)


# ---------------------------------------------------------------------------
# ggml's block types (GGUF tensor data), dequantized with numpy
#
# Each quantized type stores a row as blocks of a fixed number of values. Each
# function below takes blocks as a (n_blocks, block_bytes) uint8 array and
# returns their values as (n_blocks, block_values) float32, vectorized over the
# blocks; byte layouts are llama.cpp's (ggml-common.h), little-endian. "fp16 d
# at k" reads the half-precision float in bytes k, k + 1.

def _f16(blocks, k):
    """The fp16 field at byte k of each block, as a float32 column (n, 1)."""
    return blocks[:, k:k + 2].copy().view("<f2").astype(np.float32)


def _nibbles(qs):
    """Bytes (n, m) -> (n, 2, m): the low nibbles, then the high ones."""
    return np.stack([qs & 15, qs >> 4], axis=1)


def _deq_q8_0(b):  # fp16 d, int8 q[32]: x = d * q
    return _f16(b, 0) * b[:, 2:34].view(np.int8).astype(np.float32)


def _deq_q4_0(b):  # fp16 d, q[16]: x[j] = d * (low nibble of q[j] - 8), x[j+16] = d * (high - 8)
    return _f16(b, 0) * (_nibbles(b[:, 2:18]).reshape(-1, 32).astype(np.float32) - 8)


def _deq_q4_1(b):  # fp16 d, fp16 m, q[16]: x = d * nibble + m
    return _f16(b, 0) * _nibbles(b[:, 4:20]).reshape(-1, 32).astype(np.float32) + _f16(b, 2)


def _fifth_bits(qh):
    """Q5_0/Q5_1's uint32 of 32 fifth bits (bit j for value j), as (n, 32) values 0 or 16."""
    bits = qh.copy().view("<u4")  # (n, 1)
    return ((bits >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8) << 4


def _deq_q5_0(b):  # fp16 d, qh[4], q[16]: x = d * ((nibble | fifth bit << 4) - 16)
    q = _nibbles(b[:, 6:22]).reshape(-1, 32) | _fifth_bits(b[:, 2:6])
    return _f16(b, 0) * (q.astype(np.float32) - 16)


def _deq_q5_1(b):  # fp16 d, fp16 m, qh[4], q[16]: x = d * (nibble | fifth bit << 4) + m
    q = _nibbles(b[:, 8:24]).reshape(-1, 32) | _fifth_bits(b[:, 4:8])
    return _f16(b, 0) * q.astype(np.float32) + _f16(b, 2)


def _crumbs(qs):
    """Q2_K/Q3_K's 2-bit values: bytes (n, 64) -> (n, 256). Each half of 128
    values takes 32 bytes; value 32 * j + l of a half is bits 2j, 2j+1 of byte l."""
    q = qs.reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    return (q & 3).reshape(-1, 256)


def _deq_q2_k(b):
    """scales[16] (low nibble: scale, high: min, one per 16 values), q[64] (2
    bits each), fp16 d, fp16 dmin: x = d * scale * q - dmin * min."""
    sc = b[:, 0:16]
    d = _f16(b, 80) * (sc & 15).astype(np.float32)
    m = _f16(b, 82) * (sc >> 4).astype(np.float32)
    q = _crumbs(b[:, 16:80]).reshape(-1, 16, 16).astype(np.float32)
    return (d[:, :, None] * q - m[:, :, None]).reshape(-1, 256)


def _deq_q3_k(b):
    """hmask[32] (third bit: value 32 * j + l of half h has bit 4h + j of byte
    l), q[64] (2 low bits, as Q2_K), scales[12] (16 6-bit scales, minus 32), fp16
    d: x = d * (scale - 32) * (q - (third bit clear ? 4 : 0))."""
    s = b[:, 96:108]
    lo, hi = s[:, 0:8], s[:, 8:12]
    scales = np.concatenate([(lo[:, 0:4] & 15) | ((hi & 3) << 4), (lo[:, 4:8] & 15) | (((hi >> 2) & 3) << 4),
                             (lo[:, 0:4] >> 4) | (((hi >> 4) & 3) << 4), (lo[:, 4:8] >> 4) | ((hi >> 6) << 4)], axis=1)
    d = _f16(b, 108) * (scales.astype(np.float32) - 32)
    bit = np.arange(8, dtype=np.uint8).reshape(1, 2, 4, 1)  # half, j
    third = ((b[:, 0:32].reshape(-1, 1, 1, 32) >> bit) & 1).reshape(-1, 256)
    q = _crumbs(b[:, 32:96]).astype(np.float32) - 4 * (1 - third.astype(np.float32))
    return (d[:, :, None] * q.reshape(-1, 16, 16)).reshape(-1, 256)


def _scales_mins_k4(s):
    """Q4_K/Q5_K's 12 bytes -> 8 6-bit scales and 8 6-bit mins, (n, 8) each:
    the first four in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins), the
    last four in the nibbles of bytes 8-11 with their top 2 bits in the top
    bits of bytes 0-3 (scales) and 4-7 (mins)."""
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 15) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _deq_q4_k(b):
    """fp16 d, fp16 dmin, scales[12], q[128]: 8 sub-blocks of 32; bytes
    32c..32c+31 hold sub-block 2c in their low nibbles and 2c+1 in their high
    ones: x = d * scale * nibble - dmin * min."""
    sc, mn = _scales_mins_k4(b[:, 4:16])
    qs = b[:, 16:144].reshape(-1, 4, 32)
    q = np.stack([qs & 15, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.float32)
    return ((_f16(b, 0) * sc)[:, :, None] * q - (_f16(b, 2) * mn)[:, :, None]).reshape(-1, 256)


def _deq_q5_k(b):
    """fp16 d, fp16 dmin, scales[12], qh[32], q[128]: as Q4_K, plus a fifth
    bit for value l of sub-block i in bit i of qh[l]."""
    sc, mn = _scales_mins_k4(b[:, 4:16])
    qs = b[:, 48:176].reshape(-1, 4, 32)
    q = np.stack([qs & 15, qs >> 4], axis=2).reshape(-1, 8, 32)
    q = q | (((b[:, 16:48].reshape(-1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1) << 4)
    return ((_f16(b, 0) * sc)[:, :, None] * q.astype(np.float32) - (_f16(b, 2) * mn)[:, :, None]).reshape(-1, 256)


def _deq_q6_k(b):
    """ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16] (one per 16
    values), fp16 d: x = d * scale * (q - 32). In each half of 128 values (64
    bytes of ql, 32 of qh), value 32 * j + l takes the low or high nibble of
    ql[l + 32 * (j % 2)] (j < 2 or j >= 2) and bits 2j, 2j+1 of qh[l]."""
    ql = b[:, 0:128].reshape(-1, 2, 2, 32)  # half, j % 2, l
    low = np.concatenate([ql & 15, ql >> 4], axis=2)  # half, j, l
    qh = b[:, 128:192].reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    q = (low | ((qh & 3) << 4)).reshape(-1, 16, 16).astype(np.float32) - 32
    sc = b[:, 192:208].view(np.int8).astype(np.float32)
    return ((_f16(b, 208) * sc)[:, :, None] * q).reshape(-1, 256)


IQ4_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)


def _deq_iq4_nl(b):  # fp16 d, q[16] as Q4_0's nibbles: x = d * IQ4_VALUES[nibble]
    return _f16(b, 0) * IQ4_VALUES[_nibbles(b[:, 2:18]).reshape(-1, 32)]


def _deq_iq4_xs(b):
    """fp16 d, uint16 scales_h, scales_l[4], q[128]: 8 sub-blocks of 32, each
    as an IQ4_NL block whose 6-bit scale (minus 32) has its low 4 bits in
    nibble i of scales_l and its top 2 bits in bits 2i, 2i+1 of scales_h."""
    h = b[:, 2:4].copy().view("<u2").astype(np.uint32)  # (n, 1)
    low = _nibbles(b[:, 4:8]).swapaxes(1, 2).reshape(-1, 8).astype(np.uint32)
    ls = low | (((h >> (2 * np.arange(8, dtype=np.uint32))) & 3) << 4)
    d = _f16(b, 0) * (ls.astype(np.float32) - 32)
    q = _nibbles(b[:, 8:136].reshape(-1, 8, 16).reshape(-1, 16)).reshape(-1, 8, 32)
    return (d[:, :, None] * IQ4_VALUES[q]).reshape(-1, 256)


def _deq_f32(b):
    return b.copy().view("<f4")


def _deq_f16(b):
    return b.copy().view("<f2").astype(np.float32)


def _deq_bf16(b):  # bfloat16 is the top half of a float32
    return (b.copy().view("<u2").astype(np.uint32) << 16).view(np.float32)


# ggml type id: (name, values per block, bytes per block, dequantizer)
GGML_TYPES = {
    0: ("F32", 1, 4, _deq_f32), 1: ("F16", 1, 2, _deq_f16), 30: ("BF16", 1, 2, _deq_bf16),
    8: ("Q8_0", 32, 34, _deq_q8_0), 2: ("Q4_0", 32, 18, _deq_q4_0), 3: ("Q4_1", 32, 20, _deq_q4_1),
    6: ("Q5_0", 32, 22, _deq_q5_0), 7: ("Q5_1", 32, 24, _deq_q5_1),
    10: ("Q2_K", 256, 84, _deq_q2_k), 11: ("Q3_K", 256, 110, _deq_q3_k), 12: ("Q4_K", 256, 144, _deq_q4_k),
    13: ("Q5_K", 256, 176, _deq_q5_k), 14: ("Q6_K", 256, 210, _deq_q6_k),
    20: ("IQ4_NL", 32, 18, _deq_iq4_nl), 23: ("IQ4_XS", 256, 136, _deq_iq4_xs),
}
# types that exist but that export.py does not read: named in the error
GGML_UNREAD = {9: "Q8_1", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 21: "IQ3_S",
               22: "IQ2_S", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0",
               35: "TQ2_0", 39: "MXFP4"}
GGML_F32, GGML_F16, GGML_Q8_0, GGML_Q4_0, GGML_Q4_K, GGML_Q6_K, GGML_BF16 = 0, 1, 8, 2, 12, 14, 30
GGML_BY_NAME = {v[0]: k for k, v in GGML_TYPES.items()}

# run.c's weight type of each ggml type that it runs as it is (Q8_0 and Q4_0
# are repacked into run.c's layout, bit for bit; Q4_K and Q6_K blocks are
# copied), and, for the others, the type they are converted to when --dtype
# does not say: the smallest that adds at most 2% to the error the file
# already has (measured on ../shared's files; README, "GGUF files").
GGML_NATIVE = {GGML_Q8_0: "q8_0", GGML_Q4_0: "q4_0", GGML_Q4_K: "q4_k", GGML_Q6_K: "q6_k"}
GGML_NEAREST = {GGML_BY_NAME[n]: t for n, t in (("Q4_1", "q8_0"), ("Q5_0", "q6_k"), ("Q5_1", "q8_0"), ("Q2_K", "q4_k"),
                                                 ("Q3_K", "q6_k"), ("Q5_K", "q8_0"), ("IQ4_NL", "q6_k"),
                                                 ("IQ4_XS", "q6_k"))}
K_FALLBACK = {"q4_k": "q4_0", "q6_k": "q8_0"}  # for rows that are not whole blocks of 256


def ggml_type_name(ttype):
    if ttype in GGML_TYPES:
        return GGML_TYPES[ttype][0]
    return GGML_UNREAD.get(ttype, f"unknown type {ttype}")


def ggml_dequantize(raw, ttype, shape):
    """The float32 values of a tensor's raw bytes in ggml type ttype."""
    _, per_block, block_bytes, deq = GGML_TYPES[ttype]
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, block_bytes)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf scales are refused by write_model
        return deq(blocks).reshape(shape)


# ---------------------------------------------------------------------------
# GGUF (llama.cpp): v2 and v3 files of Llama-architecture models

GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class GGUFFile:
    """The key-value metadata and tensor table of a GGUF file; tensors are read
    on demand. Layout: "GGUF", uint32 version, uint64 tensor count, uint64
    key-value count, the key-values, the tensor infos (name, dims innermost
    first, ggml type, offset), then the data, aligned to general.alignment."""

    def __init__(self, path):
        self.path = path
        self.size = os.path.getsize(path)
        self.f = open(path, "rb")
        if self.read(4) != b"GGUF":
            raise ExportError(f"{path}: not a GGUF file (bad magic)")
        (version,) = self.unpack("<I")
        if version not in (2, 3):
            raise ExportError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
        n_tensors, n_kv = self.unpack("<QQ")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise ExportError(f"{path}: implausible GGUF counts ({n_tensors} tensors, {n_kv} keys)")
        self.meta = {}
        for _ in range(n_kv):
            key = self.string()
            (vtype,) = self.unpack("<I")
            self.meta[key] = self.value(vtype)
        self.tensors = {}
        for _ in range(n_tensors):
            name = self.string()
            (n_dims,) = self.unpack("<I")
            if n_dims > 4:
                raise ExportError(f"{path}: tensor {name} has {n_dims} dimensions")
            dims = self.unpack(f"<{n_dims}Q")
            ttype, offset = self.unpack("<IQ")
            if any(d == 0 or d > self.size * 2 for d in dims):
                raise ExportError(f"{path}: tensor {name} has impossible dimensions {list(dims)}")
            self.tensors[name] = (tuple(reversed(dims)), ttype, offset)
        align = self.meta.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise ExportError(f"{path}: invalid general.alignment {align}")
        self.data_start = -(-self.f.tell() // align) * align
        for name, (shape, ttype, offset) in self.tensors.items():
            if ttype not in GGML_TYPES:
                raise ExportError(
                    f"{path}: tensor {name} has ggml type {ggml_type_name(ttype)}, which export.py cannot read "
                    f"(it reads {', '.join(v[0] for v in GGML_TYPES.values())}): download the model in one of "
                    "those (Q4_K_M is the common choice), or export from its Hugging Face checkpoint")
            if self.data_start + offset + self.nbytes(shape, ttype, name) > self.size:
                raise ExportError(f"{path}: tensor {name} lies outside the file (truncated?)")

    def read(self, n):
        data = self.f.read(n)
        if len(data) != n:
            raise ExportError(f"{self.path}: GGUF file is truncated")
        return data

    def unpack(self, fmt):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))

    def string(self):
        (n,) = self.unpack("<Q")
        if n > self.size:
            raise ExportError(f"{self.path}: string length {n} is larger than the file")
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype):
        if vtype in GGUF_SCALARS:
            return self.unpack(GGUF_SCALARS[vtype])[0]
        if vtype == 8:
            return self.string()
        if vtype == 9:
            itype, n = self.unpack("<IQ")
            if n > self.size:
                raise ExportError(f"{self.path}: array length {n} is larger than the file")
            if itype in GGUF_SCALARS and itype != 7:  # numbers: read in one go
                dt = np.dtype(GGUF_SCALARS[itype])
                return np.frombuffer(self.read(n * dt.itemsize), dtype=dt).tolist()
            return [self.value(itype) for _ in range(n)]
        raise ExportError(f"{self.path}: unknown GGUF value type {vtype}")

    def nbytes(self, shape, ttype, name):
        _, block, block_bytes, _ = GGML_TYPES[ttype]
        count = int(np.prod(shape, dtype=np.int64))
        if shape and shape[-1] % block:
            raise ExportError(f"{self.path}: tensor {name} ({ggml_type_name(ttype)}) has rows of {shape[-1]} "
                              f"values, not a whole number of its {block}-value blocks")
        return count // block * block_bytes

    def raw(self, name):
        """The tensor as a GGMLTensor: its bytes as they are in the file."""
        shape, ttype, offset = self.tensors[name]
        data = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.data_start + offset,
                         shape=(self.nbytes(shape, ttype, name),))
        return GGMLTensor(name, ttype, shape, data)

    def get(self, name):
        """The tensor's values as float32."""
        return self.raw(name).numpy()


def llama3_rope_from_factors(factors, head_dim, theta, path):
    """llama.cpp stores Llama 3.1 rope scaling as a rope_freqs tensor (the
    divisor of each frequency) rather than its parameters: find the
    parameters (low 1, high 4, original 8192, as Meta uses) that give it."""
    factors = np.asarray(factors, dtype=np.float64)
    factor = float(factors.max())
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    for orig in (8192, 4096, 2048, 16384, 32768):
        rs = {"factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_seq_len": orig}
        wavelen = 2 * np.pi / inv_freq
        smooth = (orig / wavelen - 1.0) / 3.0
        want = np.where(wavelen < orig / 4.0, 1.0, np.where(wavelen > orig, factor, 1 / ((1 - smooth) / factor + smooth)))
        if want.shape == factors.shape and np.allclose(want, factors, rtol=1e-3):
            return rs
    raise ExportError(f"{path}: rope_freqs does not match Llama 3.1 rope scaling with any known parameters")


class GGUFCheckpoint:
    NAMES = {"attention_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
             "ffn_norm": "ffn_norm", "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up",
             "bq": "attn_q", "bk": "attn_k", "bv": "attn_v", "q_norm": "attn_q_norm", "k_norm": "attn_k_norm",
             "post_attn_norm": "post_attention_norm", "post_ffn_norm": "post_ffw_norm"}
    ARCHS = ("llama", "qwen2", "qwen3", "granite", "gemma2", "gemma3", "phi3")
    NEOX = ("qwen2", "qwen3", "gemma2", "gemma3", "phi3")  # q and k rows left in rotate-half order by llama.cpp

    def __init__(self, path):
        self.gguf = g = GGUFFile(path)
        self.path = path
        arch = g.meta.get("general.architecture")
        self.arch = arch
        if arch not in self.ARCHS:
            raise ExportError(f"{path}: architecture {arch!r} is not supported ({', '.join(self.ARCHS)})")

        def key(k, default=None):
            v = g.meta.get(f"{arch}.{k}", default)
            if v is None:
                raise ExportError(f"{path}: GGUF metadata {arch}.{k} is missing")
            return v

        dim, n_heads = key("embedding_length"), key("attention.head_count")
        head_dim = key("attention.key_length", dim // n_heads)
        theta = float(key("rope.freq_base", 10000.0))
        if "token_embd.weight" not in g.tensors:
            raise ExportError(f"{path}: no token_embd.weight tensor")
        rope = None
        if "rope_freqs.weight" in g.tensors:
            rope = llama3_rope_from_factors(g.get("rope_freqs.weight"), head_dim, theta, path)
        # generation also ends at the end-of-turn token of a chat model (Gemma's <end_of_turn>)
        eos = as_list(g.meta.get("tokenizer.ggml.eos_token_id")) + as_list(g.meta.get("tokenizer.ggml.eot_token_id"))
        self.config = {
            "dim": dim, "hidden_dim": key("feed_forward_length"), "n_layers": key("block_count"),
            "n_heads": n_heads, "n_kv_heads": key("attention.head_count_kv", n_heads), "head_dim": head_dim,
            "vocab_size": g.tensors["token_embd.weight"][0][0], "seq_len": key("context_length"),
            "rope_theta": theta, "rope_scaling": rope, "norm_eps": float(key("attention.layer_norm_rms_epsilon")),
            "tied": "output.weight" not in g.tensors, "qkv_bias": "blk.0.attn_q.bias" in g.tensors,
            "qk_norm": "blk.0.attn_q_norm.weight" in g.tensors,
            # granite's multipliers (llama.cpp's logit_scale is Granite's logits_scaling, a divisor)
            "embedding_scale": float(g.meta.get(f"{arch}.embedding_scale", 0.0)),
            "attention_scale": float(g.meta.get(f"{arch}.attention.scale", 0.0)),
            "residual_scale": float(g.meta.get(f"{arch}.residual_scale", 0.0)),
            "logit_scale": 1.0 / float(g.meta[f"{arch}.logit_scale"]) if f"{arch}.logit_scale" in g.meta else 0.0,
            "bos_id": g.meta.get("tokenizer.ggml.bos_token_id", -1), "eos_ids": list(dict.fromkeys(eos)),
        }
        self.config.update(self.rope_scaling(key))
        if arch.startswith("gemma"):
            self.config.update(self.gemma(key))
        if arch == "phi3":
            self.config.update(self.phi3(key))

    def phi3(self, key):
        """Phi-3's rotated width (rope.dimension_count; Phi-4-mini rotates 96 of
        128), its window when one binds, and LongRoPE: the factor tensors
        rope_factors_short/long with rope.scaling.original_context_length
        and attn_factor."""
        c, g = self.config, self.gguf
        out = {"rope_dim": int(key("rope.dimension_count", c["head_dim"]))}
        window = int(g.meta.get("phi3.attention.sliding_window", 0) or 0)
        if 0 < window < c["seq_len"]:
            out.update({"sliding_window": window, "sliding_layers": list(range(c["n_layers"]))})
        if "rope_factors_long.weight" in g.tensors:
            short, long = (g.get(f"rope_factors_{k}.weight").astype(np.float32) for k in ("short", "long"))
            if short.shape != (out["rope_dim"] // 2,) or long.shape != short.shape:
                raise ExportError(f"{self.path}: rope_factors_short/long must have {out['rope_dim'] // 2} values")
            out["longrope"] = {"short": short, "long": long, "attn_factor": float(key("rope.scaling.attn_factor", 1.0)),
                               "original_seq_len": int(key("rope.scaling.original_context_length"))}
        return out

    def rope_scaling(self, key):
        kind = self.gguf.meta.get(f"{self.arch}.rope.scaling.type", "none")
        if kind == "none":
            return {}
        if kind != "linear":
            raise ExportError(f"{self.path}: rope scaling {kind!r} is not supported (linear, or Llama 3.1's "
                              "rope_freqs tensor)")
        return {"rope_linear_factor": float(key("rope.scaling.factor"))}

    def gemma(self, key):
        """What llama.cpp knows of Gemma without metadata: Gemma 2 alternates
        local and global layers from the first (window 4096 unless stated),
        Gemma 3 has one global layer in six and a local RoPE base of 10000;
        the embedding is scaled by sqrt(dim); attention by 1/sqrt(head_dim),
        but by 1/sqrt(dim / n_heads) for the 27B models (46 and 62 layers).
        Its converter stored the norms as (1 + w), as run.c wants them."""
        c, gemma2 = self.config, self.arch == "gemma2"
        every = 2 if gemma2 else 6
        window = int(key("attention.sliding_window", 4096 if gemma2 else None))
        big = c["n_layers"] == (46 if gemma2 else 62)
        out = {"post_norms": True, "activation": "gelu_tanh", "embedding_scale": math.sqrt(c["dim"]),
               "attention_scale": 1 / math.sqrt(c["dim"] / c["n_heads"] if big else c["head_dim"]),
               "sliding_window": window, "sliding_layers": [i for i in range(c["n_layers"]) if (i + 1) % every]}
        if gemma2:
            out["attn_softcap"] = float(key("attn_logit_softcapping", 50.0))
            out["final_softcap"] = float(key("final_logit_softcapping", 30.0))
        else:
            out["rope_local_theta"] = 10000.0
        return out

    @classmethod
    def gguf_name(cls, name):
        """run.c's tensor name -> llama.cpp's"""
        if name in ("tok_embeddings", "norm", "output"):
            return {"tok_embeddings": "token_embd", "norm": "output_norm", "output": "output"}[name] + ".weight"
        _, i, kind = name.split(".")
        part = "bias" if kind[0] == "b" else "weight"
        return f"blk.{i}.{cls.NAMES[kind]}.{part}"

    def get(self, name):
        if name in ("rope_short_factors", "rope_long_factors"):
            return self.config["longrope"]["short" if name == "rope_short_factors" else "long"]
        fused = self.fused_part(name)
        t = fused if fused is not None else self.tensor(self.gguf_name(name))
        # For llama, llama.cpp's converter already put q and k rows in Meta's
        # interleaved RoPE order (its "permute"), which is run.c's: no
        # reordering. For qwen2, qwen3, gemma2 and gemma3 it keeps Hugging
        # Face's rotate-half order (llama.cpp runs them with NEOX rope),
        # reordered here as for --hf, with the per-head q/k norm weights.
        kind = name.split(".")[-1]
        if self.arch in self.NEOX and kind in ("wq", "wk", "bq", "bk", "q_norm", "k_norm"):
            c = self.config
            heads = 1 if kind.endswith("norm") else c["n_heads"] if kind[1] == "q" else c["n_kv_heads"]
            rope_dim = c.get("rope_dim") or c["head_dim"]
            if isinstance(t, GGMLTensor):  # whole rows move, in whatever encoding: bit for bit still
                return GGMLTensor(t.name, t.ttype, t.shape,
                                  np.ascontiguousarray(unpermute_rope(t.row_bytes(), heads, c["head_dim"], rope_dim)))
            return unpermute_rope(t, heads, c["head_dim"], rope_dim)
        return t

    def fused_part(self, name):
        """Phi-3's fused matrices, as llama.cpp keeps them: attn_qkv (q's rows,
        k's, v's) and ffn_up (the gate's rows, then the up projection's)."""
        if name.count(".") != 2:
            return None
        _, i, kind = name.split(".")
        c, tensors = self.config, self.gguf.tensors
        q, kv = c["n_heads"] * c["head_dim"], c["n_kv_heads"] * c["head_dim"]
        if kind in ("wq", "wk", "wv") and f"blk.{i}.attn_qkv.weight" in tensors:
            start, n = {"wq": (0, q), "wk": (q, kv), "wv": (q + kv, kv)}[kind]
            whole, rows = self.tensor(f"blk.{i}.attn_qkv.weight"), q + 2 * kv
        elif kind in ("w1", "w3") and f"blk.{i}.ffn_gate.weight" not in tensors and self.arch == "phi3":
            start, n = (0, c["hidden_dim"]) if kind == "w1" else (c["hidden_dim"], c["hidden_dim"])
            whole, rows = self.tensor(f"blk.{i}.ffn_up.weight"), 2 * c["hidden_dim"]
        else:
            return None
        if whole.shape[0] != rows:
            raise ExportError(f"{self.path}: fused tensor {whole.name if isinstance(whole, GGMLTensor) else kind} "
                              f"of block {i} has {whole.shape[0]} rows, expected {rows}")
        return whole.rows(start, n) if isinstance(whole, GGMLTensor) else whole[start:start + n]

    def tensor(self, name):
        """Matrices as GGMLTensors (written in their own type where run.c
        has it), vectors as float32."""
        if name not in self.gguf.tensors:
            raise ExportError(f"{self.path}: tensor {name} is missing")
        t = self.gguf.raw(name)
        return t if len(t.shape) == 2 else t.numpy()

    def source_type(self, name):
        fused = {"wq": "attn_qkv", "wk": "attn_qkv", "wv": "attn_qkv", "w1": "ffn_up", "w3": "ffn_up"}
        kind = name.split(".")[-1]
        if kind in fused and self.gguf_name(name) not in self.gguf.tensors:  # Phi-3's fused matrices
            return self.gguf.tensors.get(f"blk.{name.split('.')[1]}.{fused[kind]}.weight", (None, None))[1]
        return self.gguf.tensors.get(self.gguf_name(name), (None, None))[1]


def export_gguf_tokenizer(g, out, vocab_size):
    m = g.meta
    model = m.get("tokenizer.ggml.model")
    tokens = m.get("tokenizer.ggml.tokens")
    if model is None or tokens is None:
        raise ExportError(f"{g.path}: no tokenizer in the GGUF file")
    n = len(tokens)
    scores = m.get("tokenizer.ggml.scores", [0.0] * n)
    types = m.get("tokenizer.ggml.token_type", [TOK_NORMAL] * n)
    bos, eos = m.get("tokenizer.ggml.bos_token_id", -1), m.get("tokenizer.ggml.eos_token_id", -1)
    if model == "llama":  # SentencePiece
        out_tokens = [(t.encode() if ty == TOK_BYTE else t.replace("\u2581", " ").encode(), float(sc), ty)
                      for t, sc, ty in zip(tokens, scores, types)]
        flags = TOKF_ADD_BOS if m.get("tokenizer.ggml.add_bos_token", True) else 0
        flags |= TOKF_DUMMY_PREFIX if m.get("tokenizer.ggml.add_space_prefix", True) else 0
        write_tokenizer(out, pad_vocab(out_tokens, vocab_size, g.path), KIND_SENTENCEPIECE, bos, eos,
                        m.get("tokenizer.ggml.unknown_token_id", -1), flags,
                        chat=detect_chat_template(m.get("tokenizer.chat_template")))
    elif model == "gpt2":  # byte-level BPE
        pre = m.get("tokenizer.ggml.pre", "default")
        pretok = {"llama-bpe": PRETOK_LLAMA3, "llama3": PRETOK_LLAMA3, "qwen2": PRETOK_QWEN2,
                  "smollm": PRETOK_SMOLLM, "gpt-2": PRETOK_GPT2, "default": PRETOK_GPT2,
                  "gpt-4o": PRETOK_O200K}.get(pre)
        if pretok is None:
            raise ExportError(f"{g.path}: pre-tokenizer {pre!r} is not one run.c implements")
        to_byte = gpt2_unicode_to_byte()
        out_tokens = []
        for t, ty in zip(tokens, types):
            if ty in (TOK_CONTROL, TOK_USER_DEFINED, TOK_UNUSED):
                out_tokens.append((t.encode(), 0.0, ty))
            elif all(c in to_byte for c in t):
                out_tokens.append((bytes(to_byte[c] for c in t), 0.0, TOK_NORMAL))
            else:
                raise ExportError(f"{g.path}: token {t!r} is not in GPT-2's byte alphabet")
        ids = {tok[0]: i for i, tok in reversed(list(enumerate(out_tokens))) if tok[2] == TOK_NORMAL}
        merges = []
        for k, mg in enumerate(m.get("tokenizer.ggml.merges", [])):
            a, b = mg.split(" ", 1)
            try:
                merges.append((ids[bytes(to_byte[c] for c in a)], ids[bytes(to_byte[c] for c in b)]))
            except KeyError:
                raise ExportError(f"{g.path}: merge {k} names a token that is not in the vocabulary") from None
        flags = TOKF_ADD_BOS if m.get("tokenizer.ggml.add_bos_token", False) else 0
        flags |= TOKF_IGNORE_MERGES if pretok == PRETOK_LLAMA3 else 0
        write_tokenizer(out, pad_vocab(out_tokens, vocab_size, g.path), KIND_BYTE_LEVEL, bos, eos, -1, flags,
                        pretok, merges, detect_chat_template(m.get("tokenizer.chat_template")))
    else:
        raise ExportError(f"{g.path}: tokenizer model {model!r} is not supported (llama, gpt2)")
    progress_done(f"wrote {out}: tokenizer from the GGUF file, {n} tokens")


# ---------------------------------------------------------------------------
# Meta's original checkpoints: consolidated.*.pth and params.json

class LazyStorage:
    """A tensor storage inside the .pth zip, mapped when first used."""

    def __init__(self, zf, path, entry, dtype):
        self.zf, self.path, self.entry, self.dtype = zf, path, entry, dtype
        self.array = None

    def load(self):
        import zipfile
        import zlib
        try:
            return self._load()
        except (KeyError, ValueError, OSError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error) as e:
            raise ExportError(f"{self.path}: cannot read storage {self.entry}: {e}") from None

    def _load(self):
        if self.array is None:
            info = self.zf.getinfo(self.entry)
            if info.compress_type == 0:  # stored: map it straight from the file
                with open(self.path, "rb") as f:
                    f.seek(info.header_offset)
                    local = f.read(30)
                    if local[:4] != b"PK\x03\x04":
                        raise ExportError(f"{self.path}: damaged zip entry {self.entry}")
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                raw = np.memmap(self.path, dtype=np.uint8, mode="r", offset=start, shape=(info.file_size,))
            else:
                raw = np.frombuffer(self.zf.read(self.entry), dtype=np.uint8)
            self.array = raw.view(self.dtype)
        return self.array


class LazyTensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def numpy(self):
        data = self.storage.load()
        if not all(isinstance(v, int) and v >= 0 for v in self.shape + self.stride + (self.offset,)) \
                or len(self.shape) != len(self.stride):
            raise ExportError(f"{self.storage.path}: a tensor has an invalid shape or stride")
        count = int(np.prod(self.shape, dtype=np.int64))
        end = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1 if count else self.offset
        if self.offset < 0 or end > len(data):
            raise ExportError(f"{self.storage.path}: tensor lies outside its storage")
        item = data.itemsize
        a = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.shape,
                                            strides=[s * item for s in self.stride])
        if self.storage.dtype == "<u2":  # bfloat16: the top half of a float32
            return (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float32)


TORCH_STORAGES = {"BFloat16Storage": "<u2", "HalfStorage": "<f2", "FloatStorage": "<f4"}


def read_torch_checkpoint(path):
    """The tensors of a torch.save zip file, without torch: a restricted
    unpickler that knows only what a state dict of tensors needs."""
    import collections
    import pickle
    import zipfile

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError):
        raise ExportError(f"{path}: not a torch checkpoint (not a zip file; the old format is not supported)") \
            from None
    pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkl) != 1:
        raise ExportError(f"{path}: no data.pkl in the checkpoint")
    prefix = pkl[0][:-len("data.pkl")]

    def rebuild_tensor(storage, offset, shape, stride, *_):
        return LazyTensor(storage, offset, shape, stride)

    allowed = {("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
               ("torch._utils", "_rebuild_parameter"): lambda data, *_: data,
               ("collections", "OrderedDict"): collections.OrderedDict}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch" and name in TORCH_STORAGES:
                return TORCH_STORAGES[name]
            if (module, name) in allowed:
                return allowed[(module, name)]
            raise ExportError(f"{path}: the checkpoint refers to {module}.{name}, which is not allowed here")

        def persistent_load(self, pid):
            if not isinstance(pid, tuple) or len(pid) < 3 or pid[0] != "storage":
                raise ExportError(f"{path}: unexpected persistent id in the checkpoint")
            dtype, key = pid[1], str(pid[2])
            if dtype not in TORCH_STORAGES.values():
                raise ExportError(f"{path}: storage type {dtype!r} is not supported (bf16, f16, f32)")
            return LazyStorage(zf, path, f"{prefix}data/{key}", dtype)

    try:
        with zf.open(pkl[0]) as f:
            state = Unpickler(f).load()
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{path}: cannot read the checkpoint's pickle: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, LazyTensor) for v in state.values()):
        raise ExportError(f"{path}: the checkpoint is not a dictionary of tensors")
    return state


class MetaCheckpoint:
    """Meta's llama download: params.json and consolidated.NN.pth, one shard per
    model-parallel rank. Column-parallel weights (wq, wk, wv, w1, w3, output)
    are split by rows, row-parallel ones (wo, w2) by columns, the embedding by
    columns (Llama 2) or rows (Llama 3), norms are repeated. q and k rows are
    in the interleaved RoPE order run.c uses."""

    def __init__(self, directory):
        self.dir = directory
        p = read_json(directory, "params.json")
        shards = sorted(n for n in os.listdir(directory) if n.startswith("consolidated.") and n.endswith(".pth"))
        if not shards:
            raise ExportError(f"{directory}: no consolidated.*.pth files")
        self.shards = [read_torch_checkpoint(os.path.join(directory, n)) for n in shards]
        first = self.shards[0]
        for key in ("tok_embeddings.weight", "layers.0.feed_forward.w1.weight"):
            if key not in first:
                raise ExportError(f"{directory}: tensor {key} is missing")
        dim, n_heads = p["dim"], p["n_heads"]
        # a shard with whole rows of the embedding holds part of the vocabulary
        self.embedding_axis = 0 if first["tok_embeddings.weight"].shape[1] == dim else 1
        vocab = sum(s["tok_embeddings.weight"].shape[0] for s in self.shards) if self.embedding_axis == 0 \
            else first["tok_embeddings.weight"].shape[0]
        rope = None
        if p.get("use_scaled_rope"):
            # Llama 3.1 uses factor 8; 3.2 1B and 3B use 32
            factor = p.get("rope_scaling_factor") or (32.0 if (dim, p["n_layers"]) in ((2048, 16), (3072, 28)) else 8.0)
            rope = {"factor": float(factor), "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_seq_len": 8192}
            progress_done(f"note: Llama 3.1 rope scaling with factor {factor}")
        seq_len = p.get("max_seq_len") or (131072 if rope else 4096 if vocab == 32000 else 8192)
        self.config = {
            "dim": dim, "hidden_dim": sum(s["layers.0.feed_forward.w1.weight"].shape[0] for s in self.shards),
            "n_layers": p["n_layers"], "n_heads": n_heads, "n_kv_heads": p.get("n_kv_heads") or n_heads,
            "head_dim": dim // n_heads, "vocab_size": vocab, "seq_len": seq_len,
            "rope_theta": float(p.get("rope_theta", 10000.0)), "rope_scaling": rope,
            "norm_eps": float(p.get("norm_eps", 1e-5)), "tied": "output.weight" not in first,
            "bos_id": 128000 if vocab >= 128000 else 1, "eos_ids": [128001, 128008, 128009] if vocab >= 128000 else [2],
        }

    def get(self, name):
        meta = {"tok_embeddings": "tok_embeddings.weight", "norm": "norm.weight", "output": "output.weight"}.get(name)
        if meta is None:
            _, i, kind = name.split(".")
            part = {"attention_norm": "attention_norm", "ffn_norm": "ffn_norm", "wq": "attention.wq",
                    "wk": "attention.wk", "wv": "attention.wv", "wo": "attention.wo", "w1": "feed_forward.w1",
                    "w2": "feed_forward.w2", "w3": "feed_forward.w3"}[kind]
            meta = f"layers.{i}.{part}.weight"
        parts = []
        for s in self.shards:
            if meta not in s:
                raise ExportError(f"{self.dir}: tensor {meta} is missing from a shard")
            parts.append(s[meta].numpy())
        if len(parts) == 1 or parts[0].ndim == 1:
            return parts[0]
        axis = self.embedding_axis if meta == "tok_embeddings.weight" else 1 if meta.endswith(("wo.weight", "w2.weight")) else 0
        return np.concatenate(parts, axis=axis)


# ---------------------------------------------------------------------------
# This project's own fp32 files, to re-export (for example quantized)

class RuncCheckpoint:
    @staticmethod
    def gemma_fields(head, version):
        if version < 2:
            return {}
        local, linear, act, attn_cap, final_cap, rope_dim, attn_factor = struct.unpack("<2fi2fif", head[132:160])
        names = {v: k for k, v in ACTIVATIONS.items()}
        flags, original = struct.unpack("<I", head[64:68])[0], struct.unpack("<i", head[56:60])[0]
        longrope = {"original_seq_len": original, "attn_factor": attn_factor} if flags & FLAG_ROPE_FACTORS else None
        given, temperature, top_p, min_p, repetition, top_k = struct.unpack("<I4fi", head[160:184])
        values = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p,
                  "repetition_penalty": repetition}
        return {"rope_local_theta": local, "rope_linear_factor": linear, "activation": names.get(act, act),
                "attn_softcap": attn_cap, "final_softcap": final_cap, "rope_dim": rope_dim, "longrope": longrope,
                "generation": {k: v for k, v in values.items() if given & GEN_BITS[k]}}

    def __init__(self, path):
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(MODEL_HEADER_SIZE)
        if len(head) < MODEL_HEADER_SIZE or head[:4] != MODEL_MAGIC:
            raise ExportError(f"{path}: not a {MODEL_MAGIC.decode()} model file")
        f = struct.unpack("<4sI8i4fif3ii8i", head[:112])
        (_, version, dim, hidden, layers, heads, kv_heads, head_dim, vocab, seq_len, theta, factor, low, high,
         orig, eps, flags, wtype, bos, n_eos) = f[:20]
        if version not in (1, 2, 3) or wtype != 0:
            raise ExportError(f"{path}: only fp32 files (format versions 1 to 3) can be re-exported")
        self.config = {"dim": dim, "hidden_dim": hidden, "n_layers": layers, "n_heads": heads,
                       "n_kv_heads": kv_heads, "head_dim": head_dim, "vocab_size": vocab, "seq_len": seq_len,
                       "rope_theta": theta, "norm_eps": eps, "tied": bool(flags & FLAG_TIED_CLASSIFIER),
                       "qkv_bias": bool(flags & FLAG_QKV_BIAS), "qk_norm": bool(flags & FLAG_QK_NORM),
                       "post_norms": bool(flags & FLAG_POST_NORMS), "bos_id": bos, "eos_ids": list(f[20:20 + n_eos]),
                       "sliding_window": struct.unpack("<i", head[112:116])[0] if version >= 2 else 0,
                       **dict(zip(("embedding_scale", "attention_scale", "residual_scale", "logit_scale"),
                                  struct.unpack("<4f", head[116:132]) if version >= 2 else (0.0,) * 4)),
                       **self.gemma_fields(head, version),
                       "rope_scaling": {"factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                                        "original_seq_len": orig} if factor else None}
        self.arrays, offset = {}, MODEL_HEADER_SIZE
        if version >= 2:  # the type table: every matrix must be fp32
            n_matrices = sum(len(shape) == 2 for _, shape in tensor_order(self.config))
            with open(path, "rb") as f:
                f.seek(offset)
                if any(f.read(n_matrices)):
                    raise ExportError(f"{path}: only fp32 files can be re-exported (this one has quantized matrices)")
            offset += -(-n_matrices // TENSOR_ALIGN) * TENSOR_ALIGN
            with open(path, "rb") as f:
                f.seek(offset)
                flags = f.read(layers)
            self.config["no_rope_layers"] = [i for i, b in enumerate(flags) if b & LAYER_NO_ROPE]
            self.config["sliding_layers"] = [i for i, b in enumerate(flags) if b & LAYER_SLIDING]
            offset += -(-layers // TENSOR_ALIGN) * TENSOR_ALIGN
        for name, shape in tensor_order(self.config):
            offset += -offset % TENSOR_ALIGN
            count = int(np.prod(shape, dtype=np.int64))
            if offset + 4 * count > size:
                raise ExportError(f"{path}: file is truncated (tensor {name})")
            self.arrays[name] = np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=shape)
            offset += 4 * count

    def get(self, name):
        return self.arrays[name]


# ---------------------------------------------------------------------------
# llama2.c legacy format

class Llama2cCheckpoint:
    def __init__(self, path):
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(28)
        if len(raw) < 28:
            raise ExportError(f"{path}: too small to be a llama2.c model")
        dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack("<7i", raw)
        if min(dim, hidden, n_layers, n_heads, n_kv_heads, seq_len) <= 0 or vocab == 0 or dim % n_heads \
                or n_heads % n_kv_heads:
            header = (dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len)
            raise ExportError(f"{path}: not a llama2.c legacy model (header {header})")
        tied = vocab > 0
        vocab = abs(vocab)
        head_dim = dim // n_heads
        kv = n_kv_heads * head_dim
        L = n_layers
        self.config = {"dim": dim, "hidden_dim": hidden, "n_layers": L, "n_heads": n_heads,
                       "n_kv_heads": n_kv_heads, "head_dim": head_dim, "vocab_size": vocab, "seq_len": seq_len,
                       "rope_theta": 10000.0, "rope_scaling": None, "norm_eps": 1e-5, "tied": tied,
                       "bos_id": 1, "eos_ids": [2]}
        # (name, shape of the whole group) in file order
        groups = [("tok_embeddings", (vocab, dim)), ("attention_norm", (L, dim)), ("wq", (L, dim, dim)),
                  ("wk", (L, kv, dim)), ("wv", (L, kv, dim)), ("wo", (L, dim, dim)), ("ffn_norm", (L, dim)),
                  ("w1", (L, hidden, dim)), ("w2", (L, dim, hidden)), ("w3", (L, hidden, dim)),
                  ("norm", (dim,)), ("freq_cis", (2, seq_len, head_dim // 2))]
        if not tied:
            groups.append(("output", (vocab, dim)))
        self.arrays, offset = {}, 28
        for name, shape in groups:
            count = int(np.prod(shape, dtype=np.int64))
            if offset + 4 * count > size:
                raise ExportError(f"{path}: file is truncated (tensor {name})")
            self.arrays[name] = np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=shape)
            offset += 4 * count
        if offset != size:
            raise ExportError(f"{path}: file has {size} bytes but its header describes {offset}")

    def get(self, name):
        if "." not in name:
            return self.arrays[name]
        _, i, kind = name.split(".")
        return self.arrays[kind][int(i)]


# ---------------------------------------------------------------------------
# SentencePiece tokenizer.model (protobuf, parsed by hand)

def read_varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ExportError("protobuf: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ExportError("protobuf: varint is too long")


def protobuf_fields(buf):
    """Yields (field number, wire type, value) of one message. Values are ints
    for varints and fixed32/64 (raw bytes for those), bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ExportError(f"protobuf: unsupported wire type {wire}")
        if pos > len(buf):
            raise ExportError("protobuf: message is truncated")
        yield field, wire, value


def read_sentencepiece(path):
    """The fields of sentencepiece_model.proto that encoding depends on."""
    with open(path, "rb") as f:
        buf = f.read()
    pieces = []
    trainer = {"model_type": 1, "byte_fallback": 0, "unk_id": 0, "bos_id": 1, "eos_id": 2}
    normalizer = {"name": "", "precompiled_charsmap": b"", "add_dummy_prefix": 1,
                  "remove_extra_whitespaces": 1, "escape_whitespaces": 1}
    trainer_fields = {3: "model_type", 35: "byte_fallback", 40: "unk_id", 41: "bos_id", 42: "eos_id"}
    normalizer_fields = {1: "name", 2: "precompiled_charsmap", 3: "add_dummy_prefix",
                         4: "remove_extra_whitespaces", 5: "escape_whitespaces"}
    try:
        for field, wire, value in protobuf_fields(buf):
            if field == 1 and wire == 2:  # SentencePiece {piece = 1, score = 2, type = 3}
                piece = {"piece": b"", "score": 0.0, "type": TOK_NORMAL}
                for f2, w2, v2 in protobuf_fields(value):
                    if f2 == 1 and w2 == 2:
                        piece["piece"] = bytes(v2)
                    elif f2 == 2 and w2 == 5:
                        piece["score"] = struct.unpack("<f", v2)[0]
                    elif f2 == 3 and w2 == 0:
                        piece["type"] = v2
                pieces.append(piece)
            elif field == 2 and wire == 2:
                for f2, w2, v2 in protobuf_fields(value):
                    if f2 in trainer_fields and w2 == 0:
                        v = v2 - (1 << 64) if v2 >= 1 << 63 else v2  # int32 -1 is a 10-byte varint
                        trainer[trainer_fields[f2]] = v
            elif field == 3 and wire == 2:
                for f2, w2, v2 in protobuf_fields(value):
                    if f2 in normalizer_fields:
                        normalizer[normalizer_fields[f2]] = bytes(v2) if w2 == 2 else v2
    except ExportError as e:
        raise ExportError(f"{path}: not a SentencePiece model: {e}") from None
    if not pieces:
        raise ExportError(f"{path}: not a SentencePiece model (no pieces found)")
    return pieces, trainer, normalizer


STRIP_RIGHT, STRIP_LEFT = 1 << 8, 1 << 9  # bits of a token's type: it swallows the whitespace on that side


def added_token_type(a):
    """TOK_* of a tokenizer.json added token (control if special, else
    matched whole in text), with its rstrip / lstrip bits."""
    kind = TOK_CONTROL if a.get("special") else TOK_USER_DEFINED
    return kind | (STRIP_RIGHT if a.get("rstrip") else 0) | (STRIP_LEFT if a.get("lstrip") else 0)


def added_tokens(directory):
    """The added tokens of a tokenizer directory (tokenizer.json's
    added_tokens, else tokenizer_config.json's added_tokens_decoder), as
    {id: entry with content, special, rstrip, lstrip}."""
    path = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return {a["id"]: a for a in json.load(f).get("added_tokens", [])}
    decoder = read_tokenizer_config(directory).get("added_tokens_decoder") or {}
    return {int(i): a for i, a in decoder.items()}


def nfc_tables():
    """The data of Unicode's NFC (canonical composition), from Python's
    unicodedata, as three tables of int32 triples, each sorted: canonical
    decompositions (code point, first, second or 0: one level, applied until
    none is left), canonical combining classes (code point, class, 0) of the
    characters whose class is not 0, and compositions (first, second,
    composite) of the pairs that compose (the decompositions less Unicode's
    composition exclusions). Hangul syllables are computed, not listed."""
    import unicodedata
    decomp, ccc, comp = [], [], []
    for cp in range(0x110000):
        if 0xAC00 <= cp <= 0xD7A3 or 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if unicodedata.combining(c):
            ccc.append((cp, unicodedata.combining(c), 0))
        d = unicodedata.decomposition(c)
        if not d or d.startswith("<"):  # none, or a compatibility one
            continue
        parts = [int(x, 16) for x in d.split()]
        decomp.append((cp, parts[0], parts[1] if len(parts) > 1 else 0))
        # it composes back if NFC keeps it: not excluded, not a singleton, not a non-starter
        if len(parts) == 2 and unicodedata.normalize("NFC", chr(parts[0]) + chr(parts[1])) == c:
            comp.append((parts[0], parts[1], cp))
    return [sorted(decomp), sorted(ccc), sorted(comp)]


def write_tokenizer(out, tokens, kind, bos_id, eos_id, unk_id, flags, pretok=PRETOK_NONE, merges=(), chat=(0, None)):
    """tokens: list of (bytes, score, type); merges: (left id, right id) pairs,
    highest priority first; chat: (TEMPLATE_*, default system prompt or None).
    See run.c's tokenizer section for the layout."""
    template, system = chat
    system = (system or "").encode()
    vocab = len(tokens)
    for name, i in (("bos_id", bos_id), ("eos_id", eos_id), ("unk_id", unk_id)):
        if not -1 <= i < vocab:
            raise ExportError(f"{name} {i} is outside the vocabulary of {vocab}")
    body = bytearray()
    for text, score, ttype in tokens:
        body += struct.pack("<fii", score, ttype, len(text)) + text
    for a, b in merges:
        body += struct.pack("<ii", a, b)
    body += system
    if flags & TOKF_NFC:  # the normalizer's data: three tables, each a count then int32 triples
        for table in nfc_tables():
            body += struct.pack("<i", len(table)) + np.asarray(table, dtype="<i4").tobytes()
    max_len = max(len(t[0]) for t in tokens)
    header = struct.pack("<4sI11i", TOKENIZER_MAGIC, TOKENIZER_VERSION, vocab, max_len, bos_id, eos_id, unk_id,
                         flags, kind, pretok, len(merges), template, len(system))
    header += bytes(TOKENIZER_HEADER_SIZE - len(header))
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header + body)
    os.replace(tmp, out)


def export_sentencepiece(path, out, vocab_size=None):
    pieces, trainer, normalizer = read_sentencepiece(path)
    if trainer["model_type"] != 2:
        kind = {1: "unigram", 3: "word", 4: "char"}.get(trainer["model_type"], str(trainer["model_type"]))
        raise ExportError(f"{path}: SentencePiece model type is {kind}; only BPE is supported")
    if normalizer["precompiled_charsmap"]:
        raise ExportError(f"{path}: the tokenizer uses a Unicode normalization ({normalizer['name'].decode()!r}) "
                          "that run.c does not implement; only 'identity' is supported")
    if not normalizer["escape_whitespaces"]:
        raise ExportError(f"{path}: tokenizers that do not escape whitespace are not supported")
    flags = TOKF_ADD_BOS
    if normalizer["add_dummy_prefix"]:
        flags |= TOKF_DUMMY_PREFIX
    if normalizer["remove_extra_whitespaces"]:
        flags |= TOKF_REMOVE_EXTRA_WS
    tokens = []
    for p in pieces:
        if p["type"] not in range(TOK_NORMAL, TOK_BYTE + 1):
            raise ExportError(f"{path}: piece {p['piece']!r} has unknown type {p['type']}")
        # run.c keeps the word marker U+2581 as a plain space
        text = p["piece"] if p["type"] == TOK_BYTE else p["piece"].replace("\u2581".encode(), b" ")
        tokens.append((text, p["score"], p["type"]))
    # tokens added beside the SentencePiece model (Phi-3's chat tokens, ids 32000 and up)
    directory = os.path.dirname(path)
    extra = {i: a for i, a in added_tokens(directory).items() if i >= len(tokens)}
    if extra:
        tokens += [(b"", 0.0, TOK_UNUSED)] * (max(extra) + 1 - len(tokens))
        for i, a in extra.items():
            tokens[i] = (a["content"].encode(), 0.0, added_token_type(a))
        progress_done(f"note: {len(extra)} added tokens beside {os.path.basename(path)} (ids {min(extra)}-{max(extra)})")
    config = read_tokenizer_config(directory)
    eos = next((i for i, t in enumerate(tokens) if t[0] == (token_text(config.get("eos_token")) or "").encode()
                and t[2] in (TOK_CONTROL, TOK_USER_DEFINED)), trainer["eos_id"])
    tokens = pad_vocab(tokens, vocab_size, path)
    chat = detect_chat_template(config.get("chat_template"))
    write_tokenizer(out, tokens, KIND_SENTENCEPIECE, trainer["bos_id"], eos, trainer["unk_id"], flags, chat=chat)
    progress_done(f"wrote {out}: SentencePiece BPE tokenizer, {len(tokens)} tokens")


# ---------------------------------------------------------------------------
# Byte-level BPE tokenizers: tiktoken files (Llama 3) and tokenizer.json

def gpt2_unicode_to_byte():
    """GPT-2 shows each byte as a printable character: bytes that are printable
    Latin-1 stand for themselves, the other 68 for U+0100 onwards."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[chr(b)] = b
        else:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


# The pre-tokenizer patterns run.c implements, as they appear in tokenizer.json.
PATTERN_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PATTERN_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# o200k (GPT-4o's; Phi-4-mini's tokenizer.json): letters split by case, marks with them
PATTERN_O200K = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
                 r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama 3.1's special tokens, ids 128000 onwards (Llama 3.0 calls some of them
# reserved; the ids that matter, 128000-128001 and 128006-128009, agree).
LLAMA3_SPECIAL = (["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
                  + [f"<|reserved_special_token_{i}|>" for i in range(2, 247)])


TEMPLATES = {"none": 0, "llama2": 1, "llama3": 2, "llama3.1": 3, "chatml": 4, "zephyr": 5, "mistral": 6,
             "deepseek-r1": 7, "gemma": 8, "phi3": 9, "phi4": 10,
             "qwen3": 11, "smollm3": 12, "granite": 13}


def detect_chat_template(jinja):
    """(TEMPLATE_*, default system prompt) for a Hugging Face chat_template:
    which of the templates run.c renders it is, told by its markers."""
    import re
    if not jinja:
        return TEMPLATES["none"], None
    if isinstance(jinja, list):  # named templates: the default one
        jinja = next((t["template"] for t in jinja if t.get("name") == "default"), jinja[0]["template"])
    if "<\uff5cAssistant\uff5c>" in jinja:  # DeepSeek-R1 distills: <｜User｜>, <｜Assistant｜>
        return TEMPLATES["deepseek-r1"], None
    if "<|start_header_id|>" in jinja:
        return TEMPLATES["llama3.1" if "Cutting Knowledge Date" in jinja else "llama3"], None
    if "<|start_of_role|>" in jinja:  # Granite 3.x
        return TEMPLATES["granite"], None
    if "<start_of_turn>" in jinja:
        return TEMPLATES["gemma"], None
    if "<|end|>" in jinja and "'<|' + message['role'] + '|>'" in jinja:  # Phi-4: <|user|>{user}<|end|>
        return TEMPLATES["phi4"], None
    if "<|end|>" in jinja and "<|user|>" in jinja:  # Phi-3: <|user|>\n{user}<|end|>\n
        return TEMPLATES["phi3"], None
    if "<|im_start|>" in jinja and "Reasoning Mode" in jinja:  # SmolLM3: a metadata block, /think and /no_think
        return TEMPLATES["smollm3"], None
    if "<|im_start|>" in jinja:
        if "enable_thinking" in jinja:  # Qwen3: ChatML with a thinking section, which can be turned off
            return TEMPLATES["qwen3"], None
        # a default system prompt is written as a literal: '<|im_start|>system\n...<|im_end|>'
        m = re.search(r"<\|im_start\|>system\\n([^'\"]*?)<\|im_end\|>", jinja)
        return TEMPLATES["chatml"], m.group(1).replace("\\n", "\n") if m else None
    if "<|user|>" in jinja and "<|assistant|>" in jinja:
        return TEMPLATES["zephyr"], None
    if "<<SYS>>" in jinja:
        return TEMPLATES["llama2"], None
    if "[INST]" in jinja:
        return TEMPLATES["mistral"], None
    progress_done("note: the chat template is not one run.c knows; chat needs --template")
    return TEMPLATES["none"], None


def is_tiktoken(path):
    with open(path, "rb") as f:
        first = f.readline().split()
    return len(first) == 2 and first[1].isdigit() and not first[0].startswith(b"\n")


def export_tiktoken(path, out, vocab_size=None):
    """tiktoken's format: one line per token, base64 of its bytes and its rank."""
    import base64
    tokens = []
    import binascii
    with open(path, "rb") as f:
        for n, line in enumerate(f):
            parts = line.split()
            try:
                if len(parts) != 2 or int(parts[1]) != n:
                    raise ValueError
                tokens.append((base64.b64decode(parts[0], validate=True), -float(n), TOK_NORMAL))
            except (ValueError, binascii.Error):
                raise ExportError(f"{path}: line {n + 1} is not '<base64> {n}'") from None
    if len(tokens) != 128000:
        raise ExportError(f"{path}: a tiktoken file of {len(tokens)} tokens; only Llama 3's (128000) is known")
    tokens += [(name.encode(), 0.0, TOK_CONTROL) for name in LLAMA3_SPECIAL]
    tokens = pad_vocab(tokens, vocab_size, path)
    chat = detect_chat_template(read_tokenizer_config(os.path.dirname(path)).get("chat_template"))
    write_tokenizer(out, tokens, KIND_BYTE_LEVEL, 128000, 128001, -1, TOKF_ADD_BOS | TOKF_IGNORE_MERGES,
                    PRETOK_LLAMA3, chat=chat)
    progress_done(f"wrote {out}: Llama 3 byte-level BPE tokenizer, {len(tokens)} tokens")


def pad_vocab(tokens, vocab_size, path):
    """Models often have more embedding rows than tokens: the rest are unused."""
    if vocab_size is None or vocab_size == len(tokens):
        return tokens
    if vocab_size < len(tokens):
        raise ExportError(f"{path}: the tokenizer has {len(tokens)} tokens, more than the model's {vocab_size}")
    return tokens + [(b"", 0.0, TOK_UNUSED)] * (vocab_size - len(tokens))


def pretokenizer_kind(pre, path):
    """PRETOK_* for a tokenizer.json pre_tokenizer, or an error."""
    def split_pattern(p):
        pat = p.get("pattern", {})
        return pat.get("Regex", pat.get("String"))

    if pre is None:
        raise ExportError(f"{path}: no pre_tokenizer: not a byte-level BPE tokenizer run.c knows")
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    types = [p.get("type") for p in steps]
    if types == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = split_pattern(steps[0])
        if pattern == PATTERN_LLAMA3:
            return PRETOK_LLAMA3
        if pattern == PATTERN_QWEN2:
            return PRETOK_QWEN2
        if pattern == PATTERN_O200K:
            return PRETOK_O200K
        raise ExportError(f"{path}: pre-tokenizer pattern {pattern!r} is not one run.c implements")
    if types == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
        return PRETOK_GPT2
    if types == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True) \
            and not steps[1].get("add_prefix_space"):
        return PRETOK_SMOLLM
    raise ExportError(f"{path}: pre-tokenizer {types} is not one run.c implements")


def read_tokenizer_config(directory):
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def token_text(value):
    """tokenizer_config.json names a token as a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def export_tokenizer_json(path, out, vocab_size=None):
    try:
        return _export_tokenizer_json(path, out, vocab_size)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        # json errors are ValueErrors too
        raise ExportError(f"{path}: malformed tokenizer.json ({type(e).__name__}: {e})") from None


def _export_tokenizer_json(path, out, vocab_size=None):
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise ExportError(f"{path}: model type {model.get('type')!r}; only BPE tokenizers are supported")
    if model.get("byte_fallback"):
        return export_sentencepiece_json(path, out, tj, vocab_size)
    normalizer = tj.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":
        raise ExportError(f"{path}: normalizer {normalizer.get('type')!r} is not supported")
    pretok = pretokenizer_kind(tj.get("pre_tokenizer"), path)
    to_byte = gpt2_unicode_to_byte()
    vocab = model["vocab"]
    n = max(list(vocab.values()) + [a["id"] for a in tj.get("added_tokens", [])]) + 1
    tokens = [None] * n
    for text, i in vocab.items():
        try:
            tokens[i] = (bytes(to_byte[c] for c in text), 0.0, TOK_NORMAL)
        except KeyError:
            raise ExportError(f"{path}: token {text!r} is not in GPT-2's byte alphabet") from None
    added = {}
    for a in tj.get("added_tokens", []):
        tokens[a["id"]] = (a["content"].encode(), 0.0, added_token_type(a))
        added[a["content"]] = a["id"]
    holes = [i for i, t in enumerate(tokens) if t is None]
    for i in holes:  # ids no token uses
        tokens[i] = (b"", 0.0, TOK_UNUSED)
    ids = {t[0]: i for i, t in reversed(list(enumerate(tokens))) if t[2] == TOK_NORMAL}
    merges = []
    for k, m in enumerate(model.get("merges", [])):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        try:
            left, right = bytes(to_byte[c] for c in a), bytes(to_byte[c] for c in b)
            merges.append((ids[left], ids[right]))
        except KeyError:
            raise ExportError(f"{path}: merge {k} ({m!r}) names a token that is not in the vocabulary") from None
    flags = TOKF_IGNORE_MERGES if model.get("ignore_merges") else 0
    flags |= TOKF_NFC if normalizer is not None else 0  # Qwen's: text is put in NFC first
    # BOS: added when the post-processor's template starts with a special token
    bos = -1
    post = tj.get("post_processor") or {}
    procs = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for p in procs:
        if p.get("type") == "TemplateProcessing" and p.get("single"):
            first = p["single"][0]
            if "SpecialToken" in first:
                bos = added.get(first["SpecialToken"]["id"], -1)
                flags |= TOKF_ADD_BOS if bos >= 0 else 0
    config = read_tokenizer_config(os.path.dirname(path))
    if bos < 0 and token_text(config.get("bos_token")) in added:
        bos = added[token_text(config["bos_token"])]
    eos = added.get(token_text(config.get("eos_token")), -1)
    if eos < 0:
        eos = next((added[t] for t in ("<|end_of_text|>", "<|endoftext|>", "</s>") if t in added), -1)
    tokens = pad_vocab(tokens, vocab_size, path)
    write_tokenizer(out, tokens, KIND_BYTE_LEVEL, bos, eos, -1, flags, pretok, merges,
                    detect_chat_template(config.get("chat_template")))
    progress_done(f"wrote {out}: byte-level BPE tokenizer, {len(tokens)} tokens, {len(merges)} merges")


def sentencepiece_json_flags(tj, path):
    """TOKF_* for the spellings of SentencePiece's normalization in a
    tokenizer.json: spaces become the word marker U+2581 (a Replace
    normalizer, or a Metaspace pre-tokenizer that does not split), with or
    without a marker put in front (the dummy prefix: Prepend, or Metaspace's
    prepend_scheme). Gemma's Split on " " after that Replace splits nothing."""
    norm, pre = tj.get("normalizer"), tj.get("pre_tokenizer")
    steps = (norm or {}).get("normalizers", [norm]) if (norm or {}).get("type") == "Sequence" else [norm]
    steps = [s for s in steps if s]
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    flags = TOKF_ADD_BOS
    if steps == [replace] or steps == [{"type": "Prepend", "prepend": "\u2581"}, replace]:
        flags |= TOKF_DUMMY_PREFIX if len(steps) == 2 else 0
        if pre not in (None, {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                              "invert": False}):
            raise ExportError(f"{path}: pre-tokenizer {pre.get('type')!r} after the marker normalizer is not supported")
    elif not steps and (pre or {}).get("type") == "Metaspace" and not pre.get("split", True) \
            and pre.get("replacement") == "\u2581":
        flags |= TOKF_DUMMY_PREFIX if pre.get("prepend_scheme", "always") != "never" else 0
    else:
        raise ExportError(f"{path}: SentencePiece-style tokenizer.json with normalizer {norm!r} and pre-tokenizer "
                          f"{pre!r}: not a form run.c implements")
    return flags


def export_sentencepiece_json(path, out, tj, vocab_size=None):
    """A SentencePiece BPE written as tokenizer.json (Gemma 3; byte fallback):
    the pieces with the word marker as a plain space (as export_sentencepiece),
    <0xNN> byte pieces, and the merge list, whose order run.c follows exactly
    (merge ranks, not piece scores, decide as in the tokenizers library)."""
    model = tj["model"]
    flags = sentencepiece_json_flags(tj, path)
    vocab = model["vocab"]
    added = {a["content"]: a for a in tj.get("added_tokens", [])}
    n = max(list(vocab.values()) + [a["id"] for a in added.values()]) + 1
    tokens = [(b"", 0.0, TOK_UNUSED)] * n
    for text, i in vocab.items():
        if re.fullmatch(r"<0x[0-9A-F]{2}>", text):
            tokens[i] = (text.encode(), 0.0, TOK_BYTE)
        else:
            tokens[i] = (text.replace("\u2581", " ").encode(), 0.0, TOK_NORMAL)
    for text, a in added.items():
        # special tokens are placed by id only; the others are matched whole in text, except runs of
        # the word marker, which the merges make anyway (matched first they would change what follows)
        kind = TOK_NORMAL if not a.get("special") and set(text) <= {"\u2581"} else added_token_type(a)
        tokens[a["id"]] = (text.replace("\u2581", " ").encode(), 0.0, kind)
    unk = added.get(model.get("unk_token"), {}).get("id", vocab.get(model.get("unk_token"), -1))
    if unk >= 0:
        tokens[unk] = (tokens[unk][0], 0.0, TOK_UNKNOWN)
    merges = []
    for k, m in enumerate(model.get("merges", [])):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a not in vocab or b not in vocab or a + b not in vocab:
            raise ExportError(f"{path}: merge {k} ({m!r}) names a token that is not in the vocabulary")
        merges.append((vocab[a], vocab[b]))
    missing = [b for b in range(256) if f"<0x{b:02X}>" not in vocab]
    if missing:
        raise ExportError(f"{path}: byte fallback without a piece for byte 0x{missing[0]:02X}")
    config = read_tokenizer_config(os.path.dirname(path))
    ids = {t: i for t, i in vocab.items()}
    ids.update({t: a["id"] for t, a in added.items()})
    bos = ids.get(token_text(config.get("bos_token")), ids.get("<s>", ids.get("<bos>", -1)))
    eos = ids.get(token_text(config.get("eos_token")), ids.get("</s>", ids.get("<eos>", -1)))
    if config.get("add_bos_token") is False:
        flags &= ~TOKF_ADD_BOS
    tokens = pad_vocab(tokens, vocab_size, path)
    write_tokenizer(out, tokens, KIND_SENTENCEPIECE, bos, eos, unk, flags, merges=merges,
                    chat=detect_chat_template(config.get("chat_template")))
    progress_done(f"wrote {out}: SentencePiece BPE tokenizer (tokenizer.json), {len(tokens)} tokens, "
                  f"{len(merges)} merges")


def export_tokenizer(path, out, vocab_size=None):
    """A tokenizer file, or a directory holding one, told apart by content."""
    if os.path.isdir(path):
        for name in ("tokenizer.model", "tokenizer.json"):
            if os.path.isfile(os.path.join(path, name)):
                return export_tokenizer(os.path.join(path, name), out, vocab_size)
        raise ExportError(f"{path}: no tokenizer.model or tokenizer.json")
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head.startswith(b"GGUF"):
        return export_gguf_tokenizer(GGUFFile(path), out, vocab_size)
    if head.startswith(b"{"):
        return export_tokenizer_json(path, out, vocab_size)
    if is_tiktoken(path):
        return export_tiktoken(path, out, vocab_size)
    return export_sentencepiece(path, out, vocab_size)


# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description="Convert checkpoints and tokenizers to run.c's formats.")
    ap.add_argument("out", help="output file")
    ap.add_argument("--dtype", choices=list(WEIGHT_TYPES) + ["q4_k_m"],
                    help="weight type of the matrices: fp32, q8_0, q4_0, q4_k, q6_k, or q4_k_m (llama.cpp's "
                         "mix of q4_k and q6_k); norms stay fp32. "
                         "Default: fp32; for --gguf, each matrix keeps its own type where run.c has it "
                         "(Q8_0, Q4_0, Q4_K, Q6_K) and takes the nearest one otherwise")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--hf", metavar="DIR", help="Hugging Face model directory (config.json + safetensors)")
    src.add_argument("--llama2c", metavar="FILE", help="llama2.c legacy model file (version 0)")
    src.add_argument("--gguf", metavar="FILE", help="GGUF v2/v3 file of a Llama-architecture model")
    src.add_argument("--meta-llama", metavar="DIR", help="Meta checkpoint: params.json and consolidated.*.pth")
    src.add_argument("--runc", metavar="FILE", help="this project's fp32 model file (to quantize it, say)")
    src.add_argument("--tokenizer", metavar="PATH",
                     help="tokenizer.model (SentencePiece or tiktoken), tokenizer.json, a GGUF file, "
                          "or a directory with one")
    args = ap.parse_args(argv)
    try:
        for p in (args.hf, args.llama2c, args.gguf, args.meta_llama, args.runc, args.tokenizer):
            if p is not None and not os.path.exists(p):
                raise ExportError(f"{p}: no such file or directory")
        if args.tokenizer:
            export_tokenizer(args.tokenizer, args.out)
            return 0
        if args.gguf:
            ckpt = GGUFCheckpoint(args.gguf)
        elif args.meta_llama:
            ckpt = MetaCheckpoint(args.meta_llama)
        elif args.runc:
            ckpt = RuncCheckpoint(args.runc)
        elif args.hf:
            ckpt = HuggingFaceCheckpoint(args.hf)
        else:
            ckpt = Llama2cCheckpoint(args.llama2c)
        dtype = args.dtype or (None if args.gguf else "fp32")  # GGUF: each matrix in its own type
        write_model(args.out, {**ckpt.config, "dtype": dtype}, ckpt.get,
                    getattr(ckpt, "source_type", lambda name: None))
        tok_out = os.path.join(os.path.dirname(os.path.abspath(args.out)), "tokenizer.bin")
        if args.gguf and "tokenizer.ggml.tokens" in ckpt.gguf.meta:
            export_gguf_tokenizer(ckpt.gguf, tok_out, ckpt.config["vocab_size"])
        src_dir = args.hf or args.meta_llama
        if src_dir and any(os.path.isfile(os.path.join(src_dir, n)) for n in ("tokenizer.model", "tokenizer.json")):
            # run.c looks for tokenizer.bin beside the model
            export_tokenizer(src_dir, tok_out, vocab_size=ckpt.config["vocab_size"])
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
