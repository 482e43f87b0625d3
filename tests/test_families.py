"""Each supported model family, as a tiny random model in its real Hugging
Face layout (its config.json keys with sizes shrunk, its tensor names, biases
and tied embeddings), exported and compared with the numpy reference."""

import json
import os
import struct

import numpy as np
import pytest

import hf
import reference
from conftest import export, logits

SMALL = {"vocab_size": 512, "num_hidden_layers": 2}
# LongRoPE factors shaped like Phi-3.5's: short ones near 1, long ones growing from 1 to ~50 over the frequencies
LONGROPE_SHORT = [round(1.0 + 0.05 * i, 3) for i in range(24)]
LONGROPE_LONG = [round(1.0 * 1.18 ** i, 3) for i in range(24)]

FAMILIES = {
    # Llama 3.2 1B: GQA 32/8, head_dim 64, rope_theta 5e5, llama3 rope scaling, tied, three EOS ids
    "llama3.2": {**SMALL, "model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
                 "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 16, "rope_theta": 500000.0,
                 "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                  "original_max_position_embeddings": 32, "rope_type": "llama3"},
                 "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "bos_token_id": 128000 % 512,
                 "eos_token_id": [1, 8, 9], "max_position_embeddings": 1024},
    # TinyLlama 1.1B: GQA 32/4 (ratio 8), Llama 2 everything else
    "tinyllama": {**SMALL, "model_type": "llama", "hidden_size": 128, "intermediate_size": 352,
                  "num_attention_heads": 8, "num_key_value_heads": 1, "rope_theta": 10000.0,
                  "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "max_position_embeddings": 2048},
    # SmolLM2 135M: 9 heads / 3 kv heads, rope_theta 1e5, tied
    "smollm2": {**SMALL, "model_type": "llama", "hidden_size": 96, "intermediate_size": 256,
                "num_attention_heads": 6, "num_key_value_heads": 2, "rope_theta": 100000.0,
                "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "max_position_embeddings": 8192},
    # Mistral 7B v0.1: GQA 32/8, sliding window 4096 of 32768 positions
    "mistral-v0.1": {**SMALL, "model_type": "mistral", "hidden_size": 128, "intermediate_size": 448,
                     "num_attention_heads": 8, "num_key_value_heads": 2, "rope_theta": 10000.0,
                     "rms_norm_eps": 1e-5, "sliding_window": 4096, "max_position_embeddings": 32768,
                     "tie_word_embeddings": False},
    # Mistral 7B v0.2+: rope_theta 1e6, no sliding window
    "mistral-v0.2": {**SMALL, "model_type": "mistral", "hidden_size": 128, "intermediate_size": 448,
                     "num_attention_heads": 8, "num_key_value_heads": 2, "rope_theta": 1000000.0,
                     "rms_norm_eps": 1e-5, "sliding_window": None, "max_position_embeddings": 32768,
                     "tie_word_embeddings": False},
    # SmolLM3 3B: RoPE left out of every fourth layer (no_rope_layers from no_rope_layer_interval 4), GQA 4,
    # rope_theta 5e6, tied
    "smollm3": {**SMALL, "model_type": "smollm3", "num_hidden_layers": 4, "hidden_size": 128,
                "intermediate_size": 256, "num_attention_heads": 8, "num_key_value_heads": 2, "rope_theta": 5000000.0,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 65536},
    "smollm3-explicit": {**SMALL, "model_type": "smollm3", "num_hidden_layers": 3, "hidden_size": 64,
                         "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                         "rope_theta": 10000.0, "no_rope_layers": [0, 1, 0], "tie_word_embeddings": False},
    # Granite 3.x: scalar multipliers on the embedding, the attention scores (instead of 1/sqrt(head_dim)),
    # each block's output and the logits (a divisor), values as Granite-3.1-2B's
    "granite": {**SMALL, "model_type": "granite", "hidden_size": 128, "intermediate_size": 256,
                "num_attention_heads": 8, "num_key_value_heads": 2, "rope_theta": 5000000.0, "rms_norm_eps": 1e-5,
                "tie_word_embeddings": True, "max_position_embeddings": 4096, "embedding_multiplier": 12.0,
                "attention_multiplier": 0.015625, "residual_multiplier": 0.22, "logits_scaling": 8.0},
    # Qwen3 0.6B: 16 heads / 8 kv of 128 (n_heads x head_dim = 2048 > dim 1024), RMSNorm of each q and k
    # head before RoPE, no biases, eps 1e-6, rope_theta 1e6, tied
    "qwen3": {**SMALL, "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 192,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "rope_theta": 1000000.0,
              "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 40960},
    # Qwen2.5 0.5B: 14 heads / 2 kv (ratio 7), q/k/v biases, eps 1e-6, rope_theta 1e6, tied
    "qwen2.5": {**SMALL, "model_type": "qwen2", "hidden_size": 112, "intermediate_size": 304,
                "num_attention_heads": 7, "num_key_value_heads": 1, "rope_theta": 1000000.0,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 32768,
                "sliding_window": 32768, "use_sliding_window": False, "max_window_layers": 21,
                "bos_token_id": 500, "eos_token_id": 501},
    # Gemma 3 1B: 4 heads / 1 kv of 256 (n_heads x head_dim != dim), sliding window 512 in five of every six
    # layers (local RoPE base 1e4, global 1e6), q/k norms, four (1 + w) norms per layer, GELU-tanh, tied
    "gemma3": {**SMALL, "model_type": "gemma3_text", "num_hidden_layers": 7, "hidden_size": 64,
               "intermediate_size": 160, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
               "query_pre_attn_scalar": 32, "sliding_window": 6, "sliding_window_pattern": 6,
               "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rms_norm_eps": 1e-6,
               "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768, "bos_token_id": 2,
               "eos_token_id": [1, 106], "final_logit_softcapping": None, "attn_logit_softcapping": None},
    # Gemma 3 4B's text model: linear RoPE scaling (factor 8) of the global layers only, layer_types given
    "gemma3-4b": {**SMALL, "model_type": "gemma3_text", "num_hidden_layers": 3, "hidden_size": 64,
                  "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                  "query_pre_attn_scalar": 16, "sliding_window": 5, "rope_theta": 1000000.0,
                  "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
                  "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
                  "max_position_embeddings": 131072, "bos_token_id": 2, "eos_token_id": 1},
    # Gemma 2 2B: local and global layers alternating (window 4096, here 6), tanh soft-capping of the
    # attention scores (50) and of the logits (30), query_pre_attn_scalar 256 = head_dim, no q/k norms
    "gemma2": {**SMALL, "model_type": "gemma2", "num_hidden_layers": 4, "hidden_size": 64,
               "intermediate_size": 160, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
               "query_pre_attn_scalar": 16, "sliding_window": 6, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
               "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh",
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "max_position_embeddings": 8192,
               "bos_token_id": 2, "eos_token_id": 1},
    # Phi-3.5-mini: fused qkv_proj and gate_up_proj, LongRoPE (short factors within the original 4096
    # positions: a 40-token text uses them), cos and sin times sqrt(1 + ln(32) / ln(4096)), eps 1e-5
    "phi3.5": {**SMALL, "model_type": "phi3", "hidden_size": 96, "intermediate_size": 160,
               "num_attention_heads": 4, "num_key_value_heads": 4, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
               "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
               "rope_scaling": {"type": "longrope", "short_factor": LONGROPE_SHORT[:12],
                                "long_factor": LONGROPE_LONG[:12]},
               "sliding_window": 262144, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 32000 % 512},
    # Phi-4-mini: GQA 24/8, partial rotary (0.75 of each head of 128), tied; here an original context of 16
    # positions, so a 40-token text takes the long factors
    "phi4-mini": {**SMALL, "model_type": "phi3", "hidden_size": 128, "intermediate_size": 192,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "partial_rotary_factor": 0.75,
                  "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072,
                  "original_max_position_embeddings": 16,
                  "rope_scaling": {"type": "longrope", "short_factor": LONGROPE_SHORT[:12],
                                   "long_factor": LONGROPE_LONG[:12]},
                  "tie_word_embeddings": True, "bos_token_id": 199999 % 512, "eos_token_id": 200020 % 512},
}


def header(path):
    with open(path, "rb") as f:
        h = f.read(116)
    ints = struct.unpack("<4sI8i", h[:40])
    n_eos = struct.unpack("<i", h[76:80])[0]
    return {"seq_len": ints[9], "flags": struct.unpack("<I", h[64:68])[0], "window": struct.unpack("<i", h[112:116])[0],
            "bos": struct.unpack("<i", h[72:76])[0], "eos": list(struct.unpack(f"<{n_eos}i", h[80:80 + 4 * n_eos]))}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_reference(tmp_path, family):
    config = FAMILIES[family]
    weights = hf.random_llama(config, seed=3)
    full = hf.write_checkpoint(tmp_path / "hf", config, weights, dtype="BF16")
    weights = hf.round_to(weights, "BF16")
    export(tmp_path / "model.bin", "--hf", tmp_path / "hf")
    tokens = list(np.random.default_rng(4).integers(0, config["vocab_size"], 40))
    got = logits(tmp_path / "model.bin", tokens)
    want = reference.forward(full, weights, tokens)
    assert np.std(want) > 0.3
    diff = np.max(np.abs(got - want))
    assert diff < 1e-4, f"{family}: max abs logit difference {diff:.3g}"


def test_header_records_what_changes_the_math(tmp_path):
    for family, expect in [("llama3.2", {"eos": [1, 8, 9], "flags": 1}), ("qwen2.5", {"flags": 3, "bos": 500}),
                           ("mistral-v0.1", {"seq_len": 32768, "flags": 0, "window": 4096}),
                           ("mistral-v0.2", {"seq_len": 32768})]:
        config = FAMILIES[family]
        hf.write_checkpoint(tmp_path / family, config, hf.random_llama(config, 0))
        export(tmp_path / f"{family}.bin", "--hf", tmp_path / family)
        h = header(tmp_path / f"{family}.bin")
        for key, value in expect.items():
            assert h[key] == value, f"{family}: {key} is {h[key]}, expected {value}"


def test_generation_config_eos_ids_are_added(tmp_path):
    config = {**FAMILIES["llama3.2"], "eos_token_id": 1}
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, 0))
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 8, 9]}))
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf")
    assert header(tmp_path / "m.bin")["eos"] == [1, 8, 9]


@pytest.mark.parametrize("family,tokenizer,vocab", [
    ("llama3.2", "llama3/tokenizer.model", 128256),
    ("smollm2", "smollm2/tokenizer.json", 49152),
])
def test_exported_directory_runs_with_its_tokenizer(shared, tmp_path, family, tokenizer, vocab):
    """export.py --hf writes tokenizer.bin beside the model; run.c finds it,
    and the prompt comes back out through byte-level decoding."""
    import shutil
    from conftest import run
    config = {**FAMILIES[family], "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64,
              "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16}
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, 0))
    shutil.copy(f"{shared}/tokenizers/{tokenizer}", tmp_path / "hf" / os.path.basename(tokenizer))
    (tmp_path / "out").mkdir()
    export(tmp_path / "out" / "model.bin", "--hf", tmp_path / "hf")
    assert (tmp_path / "out" / "tokenizer.bin").exists()
    prompt = "Héllo wörld, it's 2024! 👋🏽 中文\n\tdone"
    out = run(tmp_path / "out" / "model.bin", "-t", "0", "-n", "64", "-i", prompt).stdout.decode()
    assert out.startswith(prompt)


def test_sliding_window_binds(tmp_path):
    """Mistral 7B v0.1's sliding window, shorter than the text: each position
    sees only the last `sliding_window` positions, as the reference's mask
    says, whether the tokens go one at a time or in chunks; the context is
    not capped at the window."""
    config = {**FAMILIES["mistral-v0.1"], "sliding_window": 7}
    weights = hf.random_llama(config, seed=6)
    full = hf.write_checkpoint(tmp_path / "hf", config, weights)
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf")
    assert header(tmp_path / "m.bin")["window"] == 7 and header(tmp_path / "m.bin")["seq_len"] == 32768
    tokens = list(np.random.default_rng(2).integers(0, config["vocab_size"], 40))
    want = reference.forward(full, weights, tokens)
    unwindowed = reference.forward({**full, "sliding_window": None}, weights, tokens)
    assert np.max(np.abs(want[7:] - unwindowed[7:])) > 0.1  # the window changes the logits past it
    assert np.max(np.abs(want[:7] - unwindowed[:7])) < 1e-9  # and not before
    for chunk in (1, 5, 64):
        assert np.max(np.abs(logits(tmp_path / "m.bin", tokens, chunk) - want)) < 1e-4, chunk


def test_layer_table_with_unknown_bits_is_refused(tmp_path):
    from conftest import run
    config = FAMILIES["smollm3"]
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, seed=1))
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf")
    data = bytearray((tmp_path / "m.bin").read_bytes())
    assert list(data[320:324]) == [0, 0, 0, 1]  # the layer table (after the header and the type table): layer 3 is NoPE
    data[321] = 0x82
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    p = run(tmp_path / "bad.bin", "-n", "2", check=False)
    assert p.returncode == 1 and b"layer 1 has unknown flags 0x82 in the layer table" in p.stderr


@pytest.mark.parametrize("family,change,without", [
    ("gemma2", {"attn_logit_softcapping": 1.0}, {"attn_logit_softcapping": None}),
    ("gemma2", {"final_logit_softcapping": 3.0}, {"final_logit_softcapping": None}),
    ("gemma3", {}, {"rope_local_base_freq": 1000000.0}),  # local layers' own RoPE base
    ("gemma3-4b", {}, {"rope_scaling": None}),  # linear scaling of the global layers
    ("gemma3", {}, {"sliding_window": 4096}),  # the window of the local layers
    ("gemma3", {"query_pre_attn_scalar": 12}, {"query_pre_attn_scalar": 32}),
    ("phi3.5", {}, {"rope_scaling": None}),  # LongRoPE's short factors and attention factor
    ("phi3.5", {}, {"rope_scaling": {**FAMILIES["phi3.5"]["rope_scaling"], "attention_factor": 1.0}}),
    ("phi4-mini", {}, {"original_max_position_embeddings": 4096}),  # the long factors, not the short
    ("phi4-mini", {"rope_scaling": None}, {"partial_rotary_factor": 1.0}),  # a quarter of each head unrotated
    ("phi3.5", {"sliding_window": 9}, {"sliding_window": None}),  # Phi-3-mini-4k's window (2047 of 4096)
])
def test_each_mechanism_binds_and_matches(tmp_path, family, change, without):
    """Each of Gemma's and Phi-3's mechanisms, set so that it changes the logits (the
    reference without it differs by more than 0.1), is computed by run.c as
    the reference computes it, one token at a time and in chunks."""
    config = {**FAMILIES[family], **change}
    weights = hf.random_llama(config, seed=5)
    full = hf.write_checkpoint(tmp_path / "hf", config, weights)
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf")
    tokens = list(np.random.default_rng(6).integers(0, config["vocab_size"], 24))
    want = reference.forward(full, weights, tokens)
    assert np.max(np.abs(want - reference.forward({**full, **without}, weights, tokens))) > 0.1
    for chunk in (1, 7):
        diff = np.max(np.abs(logits(tmp_path / "m.bin", tokens, chunk) - want))
        assert diff < 1e-4, f"{family} {change}: chunk {chunk}: max abs logit difference {diff:.3g}"


@pytest.mark.parametrize("family", ["gemma3", "gemma3-4b", "gemma2", "phi3.5", "phi4-mini", "qwen3", "smollm3",
                                    "granite", "mistral-v0.1"])
def test_perplexity_mode_matches_reference_nll(shared, tmp_path, family):
    """Each family of today (BF16 safetensors, every mechanism on: windows
    shorter than the text, LongRoPE's long factors, partial rotary...) run
    as a user would, `-m perplexity` on a story with stories260K's 512-token
    tokenizer: its NLL equals the reference's on the same tokens within
    5e-4 (relative)."""
    import shutil
    from conftest import run
    config = {**FAMILIES[family], "sliding_window": 9} if family.startswith(("gemma", "mistral")) else FAMILIES[family]
    weights = hf.round_to(hf.random_llama(config, seed=11), "BF16")
    full = hf.write_checkpoint(tmp_path / "hf", config, weights, dtype="BF16")
    (tmp_path / "out").mkdir()
    export(tmp_path / "out" / "model.bin", "--hf", tmp_path / "hf")
    shutil.copy(os.path.join(shared, "models", "tok512.bin"), tmp_path / "out" / "tokenizer.bin")
    text = "Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog."
    (tmp_path / "story.txt").write_text(text)
    ids = [int(i) for i in run("-m", "tokenize", "-z", tmp_path / "out" / "tokenizer.bin", "-f",
                               tmp_path / "story.txt").stdout.split()]
    out = run(tmp_path / "out" / "model.bin", "-m", "perplexity", "-f", tmp_path / "story.txt").stdout.decode()
    fields = dict(line.split(": ") for line in out.strip().split("\n"))
    assert int(fields["tokens"]) == len(ids) > 20
    logits = reference.forward(full, weights, ids)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    want = -np.mean(logp[np.arange(len(ids) - 1), ids[1:]])
    assert abs(float(fields["nll"]) - want) < 5e-4 * want, (fields["nll"], want)
