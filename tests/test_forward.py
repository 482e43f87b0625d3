"""run.c's forward pass against the numpy reference, on tiny random models
exported from Hugging Face layout by export.py."""

import os
import re

import numpy as np
import pytest

import hf
import reference
from conftest import export, harness, logits, run

BASE = {"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 4,
        "vocab_size": 300, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}

CONFIGS = {
    # multi-head attention, separate classifier, Llama 2 RoPE
    "mha-untied": {**BASE},
    # grouped-query attention (8 query heads share 2 kv heads), tied classifier
    "gqa-tied": {**BASE, "hidden_size": 96, "num_attention_heads": 8, "num_key_value_heads": 2,
                 "tie_word_embeddings": True},
    # Llama 3 style: rope_theta 5e5, head_dim 48, GQA, RMSNorm eps 1e-6
    "theta5e5-hd48": {**BASE, "hidden_size": 192, "num_attention_heads": 4, "num_key_value_heads": 2,
                      "rope_theta": 500000.0, "rms_norm_eps": 1e-6},
    # Llama 3.1 rope scaling, with an original context short enough that all
    # three frequency bands (kept, blended, divided) occur
    "llama3-rope-scaling": {**BASE, "hidden_size": 96, "num_attention_heads": 2, "num_key_value_heads": 1,
                            "rope_theta": 500000.0, "tie_word_embeddings": True,
                            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
    # head_dim given explicitly and n_heads * head_dim != hidden_size
    "explicit-head-dim": {**BASE, "hidden_size": 80, "num_attention_heads": 4, "num_key_value_heads": 2,
                          "head_dim": 24, "intermediate_size": 100},
}


def export_random(tmp_path, name, config, dtype="F32", shards=1, seed=0):
    weights = hf.round_to(hf.random_llama(config, seed), dtype)
    full = hf.write_checkpoint(tmp_path / "hf", config, weights, dtype=dtype, shards=shards)
    out = tmp_path / f"{name}.bin"
    export(out, "--hf", tmp_path / "hf")
    return out, full, weights


def assert_logits_match(model, full_config, weights, tokens):
    """One token at a time (generation) and in chunks of 13 and 64 (a prompt)."""
    want = reference.forward(full_config, weights, tokens)
    assert np.std(want) > 0.3, "reference logits are too small to be a meaningful check"
    for chunk in (1, 13, 64):
        got = logits(model, tokens, chunk)
        assert got.shape == want.shape
        diff = np.max(np.abs(got - want))
        assert diff < 1e-4, f"chunks of {chunk}: max abs logit difference {diff:.3g}"


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_reference_at_every_position(tmp_path, name):
    config = CONFIGS[name]
    model, full, weights = export_random(tmp_path, name, config)
    tokens = list(np.random.default_rng(1).integers(0, config["vocab_size"], 80))
    assert_logits_match(model, full, weights, tokens)


@pytest.mark.parametrize("dtype,shards", [("BF16", 1), ("F16", 3)])
def test_half_precision_and_sharded_checkpoints_export_exactly(tmp_path, dtype, shards):
    config = CONFIGS["gqa-tied"]
    model, full, weights = export_random(tmp_path, "half", config, dtype=dtype, shards=shards, seed=5)
    tokens = list(np.random.default_rng(2).integers(0, config["vocab_size"], 30))
    assert_logits_match(model, full, weights, tokens)


def test_rope_scaling_changes_the_result(tmp_path):
    """Guards the test above: without scaling, the same weights give other logits."""
    config = CONFIGS["llama3-rope-scaling"]
    weights = hf.random_llama(config, 0)
    plain = {k: v for k, v in config.items() if k != "rope_scaling"}
    tokens = list(range(1, 80))
    a = reference.forward(config, weights, tokens)
    b = reference.forward(plain, weights, tokens)
    assert np.max(np.abs(a - b)) > 1e-2


def test_fp32_to_fp16_rounds_as_numpy(tmp_path):
    """run.c's float-to-half conversion (for an fp16 KV cache) equals numpy's
    astype(float16), round to nearest even, on normal, subnormal, tiny,
    overflowing, halfway and special values."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 20000), rng.normal(0, 1e-5, 20000), rng.normal(0, 3e4, 5000),
                        np.exp(rng.uniform(-40, 12, 20000)) * rng.choice([-1, 1], 20000)]).astype(np.float32)
    halves = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    midpoints = ((halves[:-1].astype(np.float64) + halves[1:]) / 2).astype(np.float32)  # exact ties
    x = np.concatenate([x, halves, midpoints, -midpoints, np.float32([0.0, -0.0, np.inf, -np.inf, 65504, 65520,
                                                                      65519.99, 1e-8, 2.98e-8, 2.99e-8])])
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    got = np.array(harness("fp16", tmp_path / "x.bin").split(), dtype=np.uint16)
    with np.errstate(over="ignore"):  # the overflowing values become infinities, as they should
        want = x.astype(np.float16).view(np.uint16)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} differ, first {x[bad[0]]!r}: {got[bad[0]]:#x} vs {want[bad[0]]:#x}"
    assert harness("fp16", _write(tmp_path, np.float32([np.nan]))).strip() != "0"


def _write(tmp_path, a):
    (tmp_path / "y.bin").write_bytes(a.tobytes())
    return tmp_path / "y.bin"


@pytest.mark.parametrize("family", ["tinyllama", "gemma3"])
def test_fp16_kv_cache_stays_close_to_the_reference(tmp_path, family):
    """--kv-cache fp16 rounds each cached key and value to a half (relative
    error 2^-11): the logits move by a few thousandths of their spread, the
    argmax stays, and chunked and one-by-one runs agree."""
    from test_families import FAMILIES
    config = FAMILIES[family]
    weights = hf.random_llama(config, seed=3)
    full = hf.write_checkpoint(tmp_path / "hf", config, weights)
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf")
    tokens = list(np.random.default_rng(1).integers(0, config["vocab_size"], 48))
    want = reference.forward(full, weights, tokens)
    spread = np.std(want)
    for chunk in (1, 16):
        got = logits(tmp_path / "m.bin", tokens, chunk, kv_cache="fp16")
        assert np.max(np.abs(got - want)) < 5e-3 * spread, chunk
        assert np.max(np.abs(got - want)) > 1e-6  # the cache really held halves
        assert np.mean(np.argmax(got, 1) == np.argmax(want, 1)) > 0.97


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_take_every_row_once_and_share_a_slow_threads_rows(threads):
    """Generation's matmuls share their rows by stealing (share_units,
    next_units): over 60 lists of 1 to 2000 units in a row, as a token's
    matmuls come, every unit is taken exactly once, and the threads that end
    first take units from the run of a slow thread (the portable build, without
    OpenMP, runs one thread, which takes them all)."""
    out = harness("share", threads)
    team, wrong, stolen = map(int, re.fullmatch(r"threads (\d+) wrong (\d+) stolen (\d+)\n", out).groups())
    assert wrong == 0
    if team > 1:
        assert team == threads and stolen > 0
    else:
        assert stolen == 0


def test_prefetch_distance_follows_the_bytes_a_token_reads(shared):
    """On a core not AMD's, rows are asked into L2 8 KB ahead where the L3
    cache holds three times the weights a token reads (they come from L3),
    else 4.5 KB (from memory): the rule (l2_ahead_for) at its edges, and
    --verbose's model card showing what this machine and a tiny model chose."""
    third = 503316480 // 3  # a third of an L3 of 480 MiB
    if harness("prefetch", 1, 1) == "none\n":
        pytest.skip("this build has no prefetch distances (only the x86 kernels do)")
    for weights, l3, want in [(third, 503316480, 8192), (third + 1, 503316480, 4608), (116_000_000, 503316480, 8192),
                              (582_000_000, 503316480, 4608), (1_000_000, 0, 4608), (0, 0, 4608)]:
        assert harness("prefetch", weights, l3) == f"{want}\n", (weights, l3)
    model = os.path.join(shared, "models", "stories260K.bin")
    err = run(model, "-z", os.path.join(shared, "models", "tok512.bin"), "-n", "4", "--verbose").stderr.decode()
    m = re.search(r"prefetch +rows (\d+) bytes ahead into L2, (\d+) into L1 \(0: none\); weights ([\d.]+) MB a token, "
                  r"L3 ([\d.]+) MB", err)
    assert m, err
    l2, weights_mb, l3_mb = int(m.group(1)), float(m.group(3)), float(m.group(4))
    # stories260K ties its classifier to the embedding, so a token reads every matrix: nearly the whole file
    assert 0.9 < weights_mb * 1e6 / os.path.getsize(model) <= 1.0
    with open("/proc/cpuinfo") as f:
        amd = "AuthenticAMD" in f.read()
    if not amd:
        assert l2 == (8192 if 0 < weights_mb < l3_mb / 3 else 4608)


def test_logits_are_the_same_on_any_number_of_threads(tmp_path):
    """Each row of a matmul comes out the same whichever thread takes it, so
    the logits of every position are bit for bit those of one thread, also
    with more threads than cores, on matrices of hundreds of rows."""
    config = {**BASE, "hidden_size": 256, "intermediate_size": 688, "num_attention_heads": 8,
              "num_key_value_heads": 2, "vocab_size": 1000}
    model, _, _ = export_random(tmp_path, "threads", config)
    tokens = [int(t) for t in np.random.default_rng(2).integers(0, config["vocab_size"], 40)]
    one, *many = [harness("logits", model, 1, *tokens, env={**os.environ, "OMP_NUM_THREADS": str(n)})
                  for n in (1, 2, 5)]
    assert all(out == one for out in many)


@pytest.mark.parametrize("kv_cache", ["fp32", "fp16"])
def test_every_buffer_of_the_state_starts_on_a_cache_line(tmp_path, kv_cache):
    """build_state's buffers (the KV cache, the activations, the quantized
    inputs, the panels, each thread's part of the scratch for unpacked rows)
    start on 64-byte cache lines, which calloc does not promise (16 bytes),
    so that no 512-bit load of them spans two lines."""
    export_random(tmp_path, "unused", {**BASE, "num_key_value_heads": 2})
    export(tmp_path / "q8_0.bin", "--hf", tmp_path / "hf", "--dtype", "q8_0")  # quantized: the GEMM panels too
    out = harness("aligned", tmp_path / "q8_0.bin", kv_cache)
    count, misaligned = map(int, re.fullmatch(r"buffers (\d+) misaligned (\d+)\n", out).groups())
    assert count >= 20 and misaligned == 0
