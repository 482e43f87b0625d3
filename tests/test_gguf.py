"""GGUF: files written the way llama.cpp writes them, and the shared one."""

import os

import numpy as np
import pytest

import gguf_writer as gw
import hf
import reference
from conftest import export, harness, logits, run
from test_families import FAMILIES
from test_tokenizer import encode_all


@pytest.mark.parametrize("ttype", [gw.F32, gw.F16, gw.BF16, gw.Q8_0])
@pytest.mark.parametrize("family", ["tinyllama", "qwen2.5", "qwen3", "granite"])
def test_gguf_export_matches_reference(tmp_path, family, ttype):
    """llama.cpp's converter permutes q and k rows into Meta's interleaved
    order, which is run.c's: a GGUF exported as it stands (to fp32) must
    agree with the reference run on the Hugging Face weights."""
    config = FAMILIES[family]
    weights = hf.random_llama(config, seed=7)
    arch = {"qwen2.5": "qwen2", "qwen3": "qwen3", "granite": "granite"}.get(family, "llama")
    stored = gw.llama_gguf(tmp_path / "m.gguf", config, weights, ttype=ttype, arch=arch)
    export(tmp_path / "m.bin", "--gguf", tmp_path / "m.gguf", "--dtype", "fp32")
    tokens = list(np.random.default_rng(0).integers(0, config["vocab_size"], 30))
    full = {**config, "tie_word_embeddings": "lm_head.weight" not in weights}
    got = logits(tmp_path / "m.bin", tokens)
    want = reference.forward(full, stored, tokens)
    assert np.std(want) > 0.3
    assert np.max(np.abs(got - want)) < 1e-4


def test_gguf_llama3_rope_freqs_become_scaling_parameters(tmp_path):
    """llama.cpp keeps Llama 3.1 rope scaling as a rope_freqs tensor (each
    frequency's divisor); the export turns it back into the parameters."""
    config = FAMILIES["llama3.2"]
    config = {**config, "rope_scaling": {**config["rope_scaling"], "original_max_position_embeddings": 8192}}
    weights = hf.random_llama(config, seed=1)
    plain = reference.inv_frequencies({k: v for k, v in config.items() if k != "rope_scaling"})
    divisors = (plain / reference.inv_frequencies(config)).astype(np.float32)
    assert divisors.max() == pytest.approx(32) and divisors.min() == pytest.approx(1)
    stored = gw.llama_gguf(tmp_path / "m.gguf", config, weights, extra={"rope_freqs.weight": (divisors, gw.F32)})
    export(tmp_path / "m.bin", "--gguf", tmp_path / "m.gguf")
    tokens = list(range(1, 60))
    got = logits(tmp_path / "m.bin", tokens)
    want = reference.forward(config, stored, tokens)
    assert np.max(np.abs(got - want)) < 1e-4


def test_shared_gguf_exports_and_runs(shared, tmp_path):
    out = tmp_path / "tiny.bin"
    export(out, "--gguf", os.path.join(shared, "models", "llama-2-tiny-random.gguf"))
    assert (tmp_path / "tokenizer.bin").exists()
    p = run(out, "-n", "16", "-t", "0", "-i", "Hello")
    assert p.stdout.startswith(b"Hello") and len(p.stdout) > 10


def test_gguf_vocab_file_tokenizer_passes_llama_cpp_cases(shared, tmp_path):
    from test_tokenizer import assert_llama_cpp_cases
    tok = tmp_path / "tok.bin"
    export(tok, "--tokenizer", os.path.join(shared, "testdata", "tokenizer", "ggml-vocab-llama-spm.gguf"))
    assert_llama_cpp_cases(shared, tmp_path, tok, "spm")


def test_damaged_gguf_is_rejected(shared, tmp_path):
    data = open(os.path.join(shared, "models", "llama-2-tiny-random.gguf"), "rb").read()
    for bad, match in [(b"GGUX" + data[4:], "not a GGUF file"), (data[:3], "truncated"), (data[:100], "truncated"),
                       (data[:len(data) - 10], "outside the file"), (data[:4] + b"\x07" + data[5:], "version 7")]:
        (tmp_path / "bad.gguf").write_bytes(bad)
        p = export(tmp_path / "bad.bin", "--gguf", tmp_path / "bad.gguf", check=False)
        assert p.returncode == 1 and match in p.stderr, p.stderr


def test_gguf_byte_level_tokenizer_equals_tokenizer_json(shared, tmp_path):
    """A gpt2-model GGUF tokenizer (SmolLM2's vocabulary and merges, as
    llama.cpp stores them) encodes like the tokenizer.json it came from."""
    import json
    from test_byte_level import byte_level_texts
    src = os.path.join(shared, "tokenizers", "smollm2", "tokenizer.json")
    with open(src, encoding="utf-8") as f:
        tj = json.load(f)
    n = len(tj["model"]["vocab"])
    tokens = [None] * n
    for text, i in tj["model"]["vocab"].items():
        tokens[i] = text
    types = [1] * n
    for a in tj["added_tokens"]:
        types[a["id"]] = 3
    meta = {"general.architecture": "llama", "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.merges": tj["model"]["merges"], "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2}
    gw.write_gguf(tmp_path / "vocab.gguf", meta, {})
    export(tmp_path / "a.bin", "--tokenizer", tmp_path / "vocab.gguf")
    export(tmp_path / "b.bin", "--tokenizer", src)
    texts = byte_level_texts(shared)[::4]
    assert encode_all(tmp_path, tmp_path / "a.bin", texts) == encode_all(tmp_path, tmp_path / "b.bin", texts)


@pytest.mark.parametrize("family,arch,change", [
    ("gemma2", "gemma2", {}),
    ("gemma3", "gemma3", {}),
    ("gemma3", "gemma3", {"rope_scaling": {"rope_type": "linear", "factor": 8.0}}),  # 4B and up
])
def test_gemma_gguf_matches_reference(tmp_path, family, arch, change):
    """Gemma 2 and 3 as llama.cpp converts them: norms stored as (1 + w), q
    and k rows left in rotate-half order, the layer pattern and Gemma 3's
    local RoPE base fixed by the architecture rather than written, Gemma 2's
    soft-caps and the window as metadata, linear RoPE scaling as
    rope.scaling.type/factor. The end-of-turn token also ends generation."""
    config = {**FAMILIES[family], **change}
    weights = hf.random_llama(config, seed=7)
    tok = {"tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.eot_token_id": 106}
    stored = gw.llama_gguf(tmp_path / "m.gguf", config, weights, ttype=gw.F16, arch=arch, tokenizer=tok)
    p = export(tmp_path / "m.bin", "--gguf", tmp_path / "m.gguf", "--dtype", "fp32")
    tokens = list(np.random.default_rng(0).integers(0, config["vocab_size"], 30))
    want = reference.forward(config, stored, tokens)
    assert np.max(np.abs(logits(tmp_path / "m.bin", tokens) - want)) < 1e-4
    with open(tmp_path / "m.bin", "rb") as f:
        h = f.read(96)
    assert list(np.frombuffer(h[80:88], "<i4")) == [1, 106], p.stderr


@pytest.mark.parametrize("family,ttype", [("phi3.5", gw.F16), ("phi4-mini", gw.F16), ("phi3.5", gw.Q8_0)])
def test_phi3_gguf_matches_reference(tmp_path, family, ttype):
    """Phi-3 as llama.cpp converts it: attn_qkv and ffn_up (gate then up)
    fused, cut apart by export without re-encoding a row; q and k rows in
    rotate-half order over the rotated part (rope.dimension_count); LongRoPE's
    factor tensors with rope.scaling.attn_factor and original_context_length."""
    config = FAMILIES[family]
    weights = hf.random_llama(config, seed=2)
    stored = gw.llama_gguf(tmp_path / "m.gguf", config, weights, ttype=ttype, arch="phi3")
    p = export(tmp_path / "m.bin", "--gguf", tmp_path / "m.gguf")
    if ttype == gw.Q8_0:
        assert "q8_0, bit for bit" in p.stderr
    tokens = list(np.random.default_rng(0).integers(0, config["vocab_size"], 30))
    quantized = ttype == gw.Q8_0
    want = reference.forward(config, stored, tokens, quantized_activations=quantized)
    assert np.max(np.abs(logits(tmp_path / "m.bin", tokens) - want)) < (2e-3 if quantized else 1e-4)
