"""An independent numpy reference of the Llama forward pass.

Written from the Hugging Face transformers definitions (LlamaModel,
LlamaRMSNorm, LlamaRotaryEmbedding with rotate_half, repeat_kv, LlamaMLP;
and the families' differences: Qwen2/3, SmolLM3, Granite, Gemma 2 and 3),
in float64, on weights in Hugging Face's own layout and names. It shares no
code with run.c or export.py: it is what the tests hold both of them to.
"""

import math

import numpy as np


def rms_norm(x, weight, eps):
    # LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def gemma_rms_norm(x, weight, eps):
    # Gemma3RMSNorm (and Gemma2's): x * rsqrt(mean(x^2) + eps) * (1 + weight)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (1.0 + weight)


def gelu_tanh(x):
    # ACT2FN["gelu_pytorch_tanh"]
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def rotary_dim(config):
    """Phi3Attention's rotary_ndims: head_dim * partial_rotary_factor."""
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return int(head_dim * config.get("partial_rotary_factor", 1.0))


def longrope(config, seq_len):
    """_compute_longrope_parameters: (per-frequency divisors, attention factor)."""
    rs = config["rope_scaling"]
    original = rs.get("original_max_position_embeddings") or config["original_max_position_embeddings"]
    factor = rs.get("factor") or config["max_position_embeddings"] / original
    attention_factor = rs.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))
    ext = rs["long_factor"] if seq_len > original else rs["short_factor"]
    return np.asarray(ext, dtype=np.float64), attention_factor


def inv_frequencies(config, local=False, seq_len=0):
    """Gemma 3's local layers: rope_local_base_freq, no scaling (its
    rotary_emb_local). Phi-3's LongRoPE: divided by the factors for seq_len."""
    dim = rotary_dim(config)
    base = config.get("rope_local_base_freq", 10000.0) if local else config.get("rope_theta", 10000.0)
    inv_freq = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    rs = None if local else config.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "longrope":
        inv_freq = inv_freq / longrope(config, seq_len)[0]
    if rs and rs.get("rope_type", rs.get("type")) == "linear":
        inv_freq = inv_freq / rs["factor"]
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        # transformers' _compute_llama3_parameters
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old_len = rs["original_max_position_embeddings"]
        low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        inv_freq = np.where(is_medium, smoothed, scaled)
    return inv_freq


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def quantize_activations(x, block=32):
    """What run.c does to the input of a quantized matmul: blocks of `block`
    values along the last axis (32; 256 for models with q4_k/q6_k matrices,
    where the width is a multiple of 256) become round(x / s) * s with
    s = max|x| / 127, in float32 as the engine computes it."""
    x32 = np.asarray(x, dtype=np.float32)
    n = x32.shape[-1]
    if n % block:
        block = 32
    padded = -(-n // block) * block
    blocks = np.zeros(x32.shape[:-1] + (padded,), dtype=np.float32)
    blocks[..., :n] = x32
    blocks = blocks.reshape(x32.shape[:-1] + (padded // block, block))
    s = np.abs(blocks).max(axis=-1, keepdims=True) / np.float32(127)
    inv = np.divide(np.float32(1), s, out=np.zeros_like(s), where=s != 0)
    q = np.rint(blocks * inv)
    return (q.astype(np.float64) * s).reshape(x32.shape[:-1] + (padded,))[..., :n]


def forward(config, weights, tokens, quantized_activations=False, inside=None):
    """Logits (len(tokens), vocab) for the whole sequence, causal attention.
    inside, a dict, receives what the trace page shows: "attention", each
    layer's attention probabilities (heads, T, T), and "residual", the
    residual stream after each layer (T, hidden).
    weights: dict of Hugging Face tensor names to arrays. With
    quantized_activations, every matmul input is quantized as run.c does for
    quantized weights (the weights given are then the dequantized ones): True
    for blocks of 32, 256 for blocks of 256 where the width allows."""
    if config.get("model_type", "").startswith("gemma"):
        assert not quantized_activations, "the Gemma reference runs on float weights only"
        return gemma_forward(config, weights, tokens)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    block = 32 if quantized_activations is True else quantized_activations
    aq = (lambda h: quantize_activations(h, block)) if quantized_activations else (lambda h: h)
    n_heads = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_heads
    head_dim = config.get("head_dim") or config["hidden_size"] // n_heads
    eps = config.get("rms_norm_eps", 1e-6)
    T = len(tokens)

    granite = config.get("model_type") == "granite"  # GraniteModel's four scalar multipliers
    residual = config.get("residual_multiplier", 1.0) if granite else 1.0
    x = w["model.embed_tokens.weight"][np.asarray(tokens)]
    if granite:
        x = x * config.get("embedding_multiplier", 1.0)
    freqs = np.outer(np.arange(T, dtype=np.float64), inv_frequencies(config, seq_len=T))
    emb = np.concatenate([freqs, freqs], axis=-1)            # (T, rotary_dim)
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    rs = config.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) == "longrope":  # cos and sin times the attention factor
        cos, sin = cos * longrope(config, T)[1], sin * longrope(config, T)[1]
    rot = rotary_dim(config)  # Phi3: only q[..., :rot] and k[..., :rot] rotate
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    window = config.get("sliding_window")
    if window and config.get("model_type") in ("mistral", "phi3"):  # position i sees i - window + 1 .. i
        mask = mask + np.tril(np.full((T, T), -np.inf), k=-window)

    rope_layers = [1] * config["num_hidden_layers"]
    if config.get("model_type") == "smollm3":  # 1: the layer uses RoPE (SmolLM3Config's no_rope_layers)
        rope_layers = config.get("no_rope_layers") or [int((i + 1) % config.get("no_rope_layer_interval", 4) != 0)
                                                       for i in range(config["num_hidden_layers"])]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        if p + "self_attn.qkv_proj.weight" in w:  # Phi3: one projection, split as q, k, v
            qkv = aq(h) @ w[p + "self_attn.qkv_proj.weight"].T
            q, k, v = np.split(qkv, [n_heads * head_dim, (n_heads + n_kv) * head_dim], axis=-1)
        else:
            q, k, v = (aq(h) @ w[f"{p}self_attn.{n}_proj.weight"].T + w.get(f"{p}self_attn.{n}_proj.bias", 0.0)
                       for n in "qkv")  # Qwen2 has biases on q, k and v
        q, k, v = q.reshape(T, n_heads, head_dim), k.reshape(T, n_kv, head_dim), v.reshape(T, n_kv, head_dim)
        if p + "self_attn.q_norm.weight" in w:  # Qwen3: RMSNorm over each head of q and k, before RoPE
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        if rope_layers[i]:  # SmolLM3: no RoPE in its NoPE layers
            q = np.concatenate([q[..., :rot] * cos + rotate_half(q[..., :rot]) * sin, q[..., rot:]], axis=-1)
            k = np.concatenate([k[..., :rot] * cos + rotate_half(k[..., :rot]) * sin, k[..., rot:]], axis=-1)
        k = np.repeat(k, n_heads // n_kv, axis=1)              # repeat_kv
        v = np.repeat(v, n_heads // n_kv, axis=1)
        scaling = config.get("attention_multiplier", 1.0) if granite else 1 / math.sqrt(head_dim)
        scores = np.einsum("thd,shd->hts", q, k) * scaling + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        att = scores / scores.sum(axis=-1, keepdims=True)
        if inside is not None:
            inside.setdefault("attention", []).append(att)
        out = np.einsum("hts,shd->thd", att, v).reshape(T, n_heads * head_dim)
        x = x + residual * (aq(out) @ w[p + "self_attn.o_proj.weight"].T)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        if p + "mlp.gate_up_proj.weight" in w:  # Phi3: gate and up in one, gate first
            gate, up = np.split(aq(h) @ w[p + "mlp.gate_up_proj.weight"].T, 2, axis=-1)
        else:
            gate = aq(h) @ w[p + "mlp.gate_proj.weight"].T
            up = aq(h) @ w[p + "mlp.up_proj.weight"].T
        x = x + residual * (aq(gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T)
        if inside is not None:
            inside.setdefault("residual", []).append(x.copy())

    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if "lm_head.weight" not in w else w["lm_head.weight"]
    return aq(x) @ head.T / (config.get("logits_scaling", 1.0) if granite else 1.0)


def gemma_layer_is_sliding(config, i):
    """Gemma2Config / Gemma3TextConfig's layer_types, or their default."""
    if config.get("layer_types"):
        return config["layer_types"][i] == "sliding_attention"
    if config["model_type"] == "gemma2":
        return i % 2 == 0
    return (i + 1) % config.get("sliding_window_pattern", 6) != 0


def gemma_forward(config, weights, tokens):
    """Gemma 2 (Gemma2Model) and Gemma 3 text (Gemma3TextModel): four
    (1 + w) RMSNorms per layer, GELU-tanh gate, embedding times sqrt(hidden),
    scores times query_pre_attn_scalar^-0.5, local (sliding-window) and
    global layers, Gemma 3's q/k norms and local RoPE base, Gemma 2's
    soft-capping of scores and logits. Tied classifier."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    gemma3 = config["model_type"] == "gemma3_text"
    n_heads, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim, eps = config.get("head_dim", 256), config.get("rms_norm_eps", 1e-6)
    T = len(tokens)
    x = w["model.embed_tokens.weight"][np.asarray(tokens)] * math.sqrt(config["hidden_size"])
    pos = np.arange(T, dtype=np.float64)
    tables = {}
    for local in (False, True):
        freqs = np.outer(pos, inv_frequencies(config, local=local and gemma3))
        emb = np.concatenate([freqs, freqs], axis=-1)
        tables[local] = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    causal = np.triu(np.full((T, T), -np.inf), k=1)
    window = np.tril(np.full((T, T), -np.inf), k=-config["sliding_window"])  # q - kv >= window is masked
    cap = config.get("attn_logit_softcapping")
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sliding = gemma_layer_is_sliding(config, i)
        h = gemma_rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q, k, v = (h @ w[f"{p}self_attn.{n}_proj.weight"].T for n in "qkv")
        q, k, v = q.reshape(T, n_heads, head_dim), k.reshape(T, n_kv, head_dim), v.reshape(T, n_kv, head_dim)
        if gemma3:
            q = gemma_rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = gemma_rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        cos, sin = tables[sliding]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k, v = np.repeat(k, n_heads // n_kv, axis=1), np.repeat(v, n_heads // n_kv, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) * config.get("query_pre_attn_scalar", 256) ** -0.5
        if cap:
            scores = np.tanh(scores / cap) * cap
        scores = scores + causal + (window if sliding else 0.0)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        att = scores / scores.sum(axis=-1, keepdims=True)
        out = np.einsum("hts,shd->thd", att, v).reshape(T, n_heads * head_dim) @ w[p + "self_attn.o_proj.weight"].T
        x = x + gemma_rms_norm(out, w[p + "post_attention_layernorm.weight"], eps)
        h = gemma_rms_norm(x, w[p + "pre_feedforward_layernorm.weight"], eps)
        mlp = (gelu_tanh(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T))
        x = x + gemma_rms_norm(mlp @ w[p + "mlp.down_proj.weight"].T, w[p + "post_feedforward_layernorm.weight"], eps)
    logits = gemma_rms_norm(x, w["model.norm.weight"], eps) @ w["model.embed_tokens.weight"].T
    final = config.get("final_logit_softcapping")
    return np.tanh(logits / final) * final if final else logits
