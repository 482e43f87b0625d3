"""Writes GGUF files for the tests, the way llama.cpp's converter does: its
metadata keys, its tensor names, q and k rows permuted from Hugging Face's
layout to Meta's interleaved one, dims innermost first, data aligned to 32."""

import math
import struct

import numpy as np

F32, F16, Q8_0, BF16 = 0, 1, 8, 30


def llama_cpp_permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute: HF rotate-half rows to Meta's pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def quantize_q8_0(a):
    """Blocks of 32: an fp16 scale d = max|x| / 127 and round(x / d) as int8."""
    blocks = a.astype(np.float32).reshape(-1, 32)
    d = np.abs(blocks).max(axis=1) / 127
    q = np.round(blocks / np.where(d == 0, 1, d)[:, None]).astype(np.int8)
    d16 = d.astype(np.float16)
    raw = np.concatenate([d16.view(np.uint8).reshape(-1, 2), q.view(np.uint8)], axis=1).tobytes()
    dequant = (q.astype(np.float32) * d16.astype(np.float32)[:, None]).reshape(a.shape)
    return raw, dequant


def encode_tensor(a, ttype):
    """(bytes, the values as read back)"""
    if ttype == F32:
        return a.astype("<f4").tobytes(), a.astype(np.float32)
    if ttype == F16:
        return a.astype("<f2").tobytes(), a.astype(np.float16).astype(np.float32)
    if ttype == BF16:
        u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
        u = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF).astype("<u2")
        return u.tobytes(), (u.astype(np.uint32) << 16).view(np.float32).reshape(a.shape)
    return quantize_q8_0(a)


def _string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _value(v):
    if isinstance(v, bool):
        return struct.pack("<I?", 7, v)
    if isinstance(v, int):
        return struct.pack("<Ii", 5, v) if -2**31 <= v < 2**31 else struct.pack("<Iq", 11, v)
    if isinstance(v, float):
        return struct.pack("<If", 6, v)
    if isinstance(v, str):
        return struct.pack("<I", 8) + _string(v)
    if isinstance(v, list):
        if all(isinstance(x, str) for x in v):
            return struct.pack("<IIQ", 9, 8, len(v)) + b"".join(_string(x) for x in v)
        if all(isinstance(x, int) for x in v):
            return struct.pack("<IIQ", 9, 5, len(v)) + np.asarray(v, dtype="<i4").tobytes()
        return struct.pack("<IIQ", 9, 6, len(v)) + np.asarray(v, dtype="<f4").tobytes()
    raise TypeError(v)


def write_gguf(path, metadata, tensors, version=3):
    """tensors: name -> (array in numpy layout, ggml type). Returns name -> values as stored."""
    header = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    header += b"".join(_string(k) + _value(v) for k, v in metadata.items())
    blobs, stored, offset, infos = [], {}, 0, b""
    for name, (a, ttype) in tensors.items():
        raw, stored[name] = encode_tensor(a, ttype)
        infos += _string(name) + struct.pack("<I", a.ndim) + struct.pack(f"<{a.ndim}Q", *reversed(a.shape))
        infos += struct.pack("<IQ", ttype, offset)
        pad = (-len(raw)) % 32
        blobs.append(raw + bytes(pad))
        offset += len(raw) + pad
    head = header + infos
    head += bytes((-len(head)) % 32)
    with open(path, "wb") as f:
        f.write(head + b"".join(blobs))
    return stored


def llama_gguf(path, config, hf_weights, ttype=F32, arch="llama", tokenizer=None, extra=None):
    """A GGUF of a Hugging Face-layout model, as llama.cpp would convert it
    (arch llama: q and k rows permuted; qwen2: as they are).
    Returns the weights as stored, back in Hugging Face layout, for the reference."""
    nh = config["num_attention_heads"]
    nkv = config.get("num_key_value_heads") or nh
    hd = config.get("head_dim") or config["hidden_size"] // nh
    meta = {"general.architecture": arch, "general.alignment": 32,
            f"{arch}.context_length": config.get("max_position_embeddings", 256),
            f"{arch}.embedding_length": config["hidden_size"], f"{arch}.block_count": config["num_hidden_layers"],
            f"{arch}.feed_forward_length": config["intermediate_size"], f"{arch}.attention.head_count": nh,
            f"{arch}.attention.head_count_kv": nkv, f"{arch}.rope.dimension_count": hd,
            f"{arch}.attention.key_length": hd,
            f"{arch}.rope.freq_base": float(config.get("rope_theta", 10000.0)),
            f"{arch}.attention.layer_norm_rms_epsilon": float(config.get("rms_norm_eps", 1e-6))}
    if arch == "granite":  # llama.cpp's names for Granite's multipliers
        meta.update({"granite.embedding_scale": config["embedding_multiplier"],
                     "granite.attention.scale": config["attention_multiplier"],
                     "granite.residual_scale": config["residual_multiplier"],
                     "granite.logit_scale": config["logits_scaling"]})
    if arch == "gemma2":  # llama.cpp reads these two keys and the window; the layer pattern is fixed
        meta.update({"gemma2.attn_logit_softcapping": float(config["attn_logit_softcapping"]),
                     "gemma2.final_logit_softcapping": float(config["final_logit_softcapping"])})
    if arch.startswith("gemma"):
        meta[f"{arch}.attention.sliding_window"] = config["sliding_window"]
    rs = config.get("rope_scaling")
    extra = dict(extra or {})
    if arch == "phi3":  # llama.cpp's Phi-3: the rotated width, LongRoPE's factors as tensors and two keys
        meta[f"{arch}.rope.dimension_count"] = int(hd * config.get("partial_rotary_factor", 1.0))
        if config.get("sliding_window"):
            meta[f"{arch}.attention.sliding_window"] = config["sliding_window"]
        if rs:
            original = config["original_max_position_embeddings"]
            factor = config["max_position_embeddings"] / original
            meta.update({f"{arch}.rope.scaling.attn_factor": math.sqrt(1 + math.log(factor) / math.log(original)),
                         f"{arch}.rope.scaling.original_context_length": original})
            for k in ("short", "long"):
                extra[f"rope_factors_{k}.weight"] = (np.asarray(rs[k + "_factor"], np.float32), F32)
    if rs and rs.get("rope_type") == "linear":
        meta.update({f"{arch}.rope.scaling.type": "linear", f"{arch}.rope.scaling.factor": float(rs["factor"])})
    if tokenizer:
        meta.update(tokenizer)
    names = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
             "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
             "self_attn.o_proj.weight": "attn_output.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight", "self_attn.q_proj.bias": "attn_q.bias",
             "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
             "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
             "self_attn.qkv_proj.weight": "attn_qkv.weight", "mlp.gate_up_proj.weight": "ffn_up.weight"}
    if arch.startswith("gemma"):  # Gemma's four norms per layer
        names.update({"post_attention_layernorm.weight": "post_attention_norm.weight",
                      "pre_feedforward_layernorm.weight": "ffn_norm.weight",
                      "post_feedforward_layernorm.weight": "post_ffw_norm.weight"})
    tensors, back = {}, {}
    for hf_name, a in hf_weights.items():
        if hf_name == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif hf_name == "model.norm.weight":
            name = "output_norm.weight"
        elif hf_name == "lm_head.weight":
            name = "output.weight"
        else:
            _, _, i, rest = hf_name.split(".", 3)
            name = f"blk.{i}.{names[rest]}"
        # llama.cpp's LlamaModel permutes q and k rows to Meta's pairs; its
        # Qwen2 and Qwen3 models keep Hugging Face's rotate-half order (NEOX rope)
        heads = nh if "q_proj" in hf_name else nkv if "k_proj" in hf_name else None
        if arch in ("qwen2", "qwen3", "phi3") or arch.startswith("gemma"):
            heads = None
        if heads:
            a = llama_cpp_permute(a, heads)
        shift = arch.startswith("gemma") and hf_name.endswith("norm.weight")
        if shift:  # llama.cpp's Gemma converters store (1 + w), what Gemma's RMSNorm multiplies by
            a = a + np.float32(1)
        # as llama.cpp: 1-D tensors (norms, biases) stay F32, and rows that are
        # not a whole number of 32-value blocks cannot be Q8_0 (F16 instead)
        t = F32 if a.ndim == 1 else F16 if ttype == Q8_0 and a.shape[-1] % 32 else ttype
        tensors[name] = (a, t)
        back[name] = (hf_name, heads, shift)
    tensors.update(extra)
    stored = write_gguf(path, meta, tensors)
    out = {}
    for name, (hf_name, heads, shift) in back.items():  # extra tensors are not returned
        a = stored[name].astype(np.float64) - 1 if shift else stored[name]  # exact in float64
        if heads:  # undo the permutation: Meta pairs back to rotate-half
            a = a.reshape(heads, a.shape[0] // heads // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
        out[hf_name] = a
    return out
