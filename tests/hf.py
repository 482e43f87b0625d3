"""Tiny random Llama checkpoints in Hugging Face's layout, written by the tests.

The safetensors writer here is the tests' own (8-byte header length, JSON
header, raw little-endian data), separate from export.py's reader."""

import json
import os
import struct

import numpy as np


def random_llama(config, seed):
    """HF-named float32 weights for config, scaled so logits are of order 1."""
    rng = np.random.default_rng(seed)
    d, h, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    nh = config["num_attention_heads"]
    nkv = config.get("num_key_value_heads") or nh
    hd = config.get("head_dim") or d // nh

    def linear(out_f, in_f):
        return rng.normal(0, 1 / np.sqrt(in_f), (out_f, in_f)).astype(np.float32)

    gemma = config.get("model_type", "").startswith("gemma")

    def norm(n):  # Gemma's norms multiply by (1 + weight): their weights lie around 0
        return ((0 if gemma else 1) + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.normal(0, 1, (v, d)).astype(np.float32)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(d)
        w[p + "self_attn.q_proj.weight"] = linear(nh * hd, d)
        w[p + "self_attn.k_proj.weight"] = linear(nkv * hd, d)
        w[p + "self_attn.v_proj.weight"] = linear(nkv * hd, d)
        w[p + "self_attn.o_proj.weight"] = linear(d, nh * hd)
        if config.get("model_type") in ("qwen3", "gemma3_text"):  # RMSNorm weights for each head of q and of k
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        if config.get("model_type") == "qwen2":  # Qwen2: biases on q, k and v
            for n, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
                w[p + f"self_attn.{n}_proj.bias"] = rng.normal(0, 0.5, rows).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = norm(d)
        if gemma:  # Gemma's post_attention_layernorm norms the attention output; these the feed-forward's in and out
            w[p + "pre_feedforward_layernorm.weight"] = norm(d)
            w[p + "post_feedforward_layernorm.weight"] = norm(d)
        w[p + "mlp.gate_proj.weight"] = linear(h, d)
        w[p + "mlp.up_proj.weight"] = linear(h, d)
        w[p + "mlp.down_proj.weight"] = linear(d, h)
    if config.get("model_type") == "phi3":  # Phi-3 fuses q, k, v into qkv_proj and gate, up into gate_up_proj
        for i in range(config["num_hidden_layers"]):
            p = f"model.layers.{i}."
            w[p + "self_attn.qkv_proj.weight"] = np.concatenate(
                [w.pop(p + f"self_attn.{n}_proj.weight") for n in "qkv"])
            w[p + "mlp.gate_up_proj.weight"] = np.concatenate(
                [w.pop(p + "mlp.gate_proj.weight"), w.pop(p + "mlp.up_proj.weight")])
    w["model.norm.weight"] = norm(d)
    if not config.get("tie_word_embeddings", gemma):  # Gemma ties by default
        w["lm_head.weight"] = linear(v, d)
    return w


def round_to(weights, dtype):
    """The weights as they will be read back after storing them as dtype."""
    if dtype == "F32":
        return weights
    if dtype == "F16":
        return {k: a.astype(np.float16).astype(np.float32) for k, a in weights.items()}
    if dtype == "BF16":  # round to nearest even on the top 16 bits
        out = {}
        for k, a in weights.items():
            u = a.view(np.uint32).astype(np.uint64)
            u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
            out[k] = u.astype(np.uint32).view(np.float32)
        return out
    raise ValueError(dtype)


def write_safetensors(path, tensors, dtype):
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        if dtype == "F32":
            raw = a.astype("<f4").tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        else:  # BF16: round to nearest even, keep the top half
            rounded = round_to({name: a.astype(np.float32)}, "BF16")[name]
            raw = (rounded.view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    head = json.dumps(header).encode()
    head += b" " * ((-len(head)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for b in blobs:
            f.write(b)


def write_checkpoint(directory, config, weights, dtype="F32", shards=1):
    """config.json plus model.safetensors, or `shards` files and an index."""
    os.makedirs(directory, exist_ok=True)
    full = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "bos_token_id": 1, "eos_token_id": 2, "max_position_embeddings": 256, **config}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(full, f, indent=2)
    names = list(weights)
    if shards == 1:
        write_safetensors(os.path.join(directory, "model.safetensors"), weights, dtype)
        return full
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: weights[n] for n in names[s::shards]}
        write_safetensors(os.path.join(directory, fname), part, dtype)
        weight_map.update({n: fname for n in part})
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return full
