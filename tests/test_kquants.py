"""GGUF files as people download them: every common ggml type read exactly
(against llama.cpp's own dequantized values in ../shared), Q8_0/Q4_0/Q4_K/Q6_K
kept bit for bit, Q4_K_M mixes run at their own precision, the q4_k/q6_k
quantizer against llama.cpp's, and damaged K-quant files refused."""

import glob
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import gguf_writer as gw
import hf
import reference
import runc_file
from conftest import HARNESS, ROOT, export, logits, run
from test_quantized import arm_harnesses, avx512_harness, vnni_harness  # noqa: F401  (fixtures: the harness built for ARM, with VNNI, with AVX-512)
from test_families import FAMILIES

sys.path.insert(0, ROOT)
import export as exporter  # noqa: E402

QUANTS = os.path.join("testdata", "gguf-quants")


def quant_files(shared):
    files = sorted(glob.glob(os.path.join(shared, QUANTS, "*.gguf")))
    assert len(files) >= 18, "../shared/testdata/gguf-quants is incomplete"
    return files


def assert_llama_cpp_values(values, ref):
    """values: a tensor as a float array; ref: its entry in the shared JSON
    (llama.cpp's gguf-py dequantization): 192 values, the sum and the sum of squares."""
    v = np.asarray(values, dtype=np.float64).ravel()
    assert list(np.shape(values)) == ref["shape"], ref["name"]
    for key, seg in (("first", v[:64]), ("at_1000", v[1000:1064]), ("last", v[-64:])):
        want = np.array(ref[key])
        if len(want):
            assert np.max(np.abs(seg[:len(want)] - want)) <= 1e-5 * np.max(np.abs(want)), (ref["name"], key)
    assert abs(v.sum() - ref["sum"]) <= 1e-5 * max(1.0, abs(ref["sum"])), ref["name"]
    assert abs((v * v).sum() - ref["sum_sq"]) <= 1e-5 * ref["sum_sq"], ref["name"]


def test_every_ggml_type_dequantizes_as_llama_cpp(shared):
    """export.py's numpy dequantizers, type by type, against the values
    llama.cpp's own package gives for the same files."""
    seen = set()
    for path in quant_files(shared):
        g = exporter.GGUFFile(path)
        with open(path[:-5] + ".json") as f:
            ref = json.load(f)
        for t in ref["tensors"]:
            seen.add(t["type"])
            assert exporter.ggml_type_name(g.tensors[t["name"]][1]) == t["type"]
            assert_llama_cpp_values(g.get(t["name"]), t)
    assert seen >= {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                    "Q6_K", "IQ4_NL", "IQ4_XS"}


def gguf_name(name):
    """run.c's tensor name -> llama.cpp's"""
    return exporter.GGUFCheckpoint.gguf_name(name)


def test_every_shared_gguf_exports_to_fp32_with_llama_cpp_values(shared, tmp_path):
    for path in quant_files(shared):
        out = tmp_path / "m.bin"
        export(out, "--gguf", path, "--dtype", "fp32")
        with open(path[:-5] + ".json") as f:
            ref = {t["name"]: t for t in json.load(f)["tensors"]}
        cfg, tensors = runc_file.read(out)
        assert {t for t, _ in tensors.values()} == {"fp32"}
        for name, (_, parts) in tensors.items():
            assert_llama_cpp_values(parts[0], ref[gguf_name(name)])


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_K", "Q6_K", "Q4_K_M-mixed"])
def test_native_types_are_kept_bit_for_bit(shared, tmp_path, kind):
    path = os.path.join(shared, QUANTS, kind + ".gguf")
    p = export(tmp_path / "m.bin", "--gguf", path)
    g = exporter.GGUFFile(path)
    _, tensors = runc_file.read(tmp_path / "m.bin")
    for name, (wtype, parts) in tensors.items():
        raw = g.raw(gguf_name(name))
        if len(raw.shape) == 1:
            continue
        src = exporter.ggml_type_name(raw.ttype)
        assert wtype == src.lower(), name
        blocks = raw.blocks()
        if wtype in ("q4_k", "q6_k"):
            assert np.array_equal(parts[0], blocks.reshape(blocks.shape[0], -1))
        else:  # run.c keeps values and scales apart: the same bytes, regrouped
            assert np.array_equal(parts[0].view(np.uint8), blocks[:, :, 2:].reshape(blocks.shape[0], -1))
            assert np.array_equal(parts[1].view(np.uint8), blocks[:, :, :2].reshape(blocks.shape[0], -1))
    assert "bit for bit" in p.stderr


def hf_weights_from(cfg, values):
    """run.c's tensors (Meta's interleaved q/k rows) -> Hugging Face names and layout."""
    def unpermute(w, heads):
        hd = w.shape[0] // heads
        return w.reshape(heads, hd // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)
    names = {"attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
             "wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj", "wo": "self_attn.o_proj",
             "w1": "mlp.gate_proj", "w2": "mlp.down_proj", "w3": "mlp.up_proj"}
    out = {"model.embed_tokens.weight": values["tok_embeddings"], "model.norm.weight": values["norm"]}
    if "output" in values:
        out["lm_head.weight"] = values["output"]
    for name, v in values.items():
        if name.startswith("layers."):
            _, i, kind = name.split(".")
            if kind in ("wq", "wk"):
                v = unpermute(v, cfg["n_heads"] if kind == "wq" else cfg["n_kv_heads"])
            out[f"model.layers.{i}.{names[kind]}.weight"] = v
    return out


def hf_config(cfg):
    return {"hidden_size": cfg["dim"], "intermediate_size": cfg["hidden_dim"], "num_hidden_layers": cfg["n_layers"],
            "num_attention_heads": cfg["n_heads"], "num_key_value_heads": cfg["n_kv_heads"],
            "head_dim": cfg["head_dim"], "rope_theta": cfg["rope_theta"], "rms_norm_eps": cfg["norm_eps"]}


def assert_quantized_logits_match(path, tokens):
    """run.c's logits on a quantized file against the reference forward pass
    on the file's own dequantized weights, with run.c's activation
    quantization (blocks of 256 where the model has K matrices). An activation that float32 (run.c) and float64 (the
    reference) round one step apart at a rounding boundary (a few of the
    ~100,000 values quantized per run) shifts later logits by up to a few
    percent of their spread (these random models have small logits), so
    the bound is loose (test_each_matrix_times_its_quantized_input_is_exact
    holds the kernels to float precision); before any such step the first
    position agrees to float precision."""
    cfg, values = runc_file.dequantized(path)
    _, tensors = runc_file.read(path)
    k_types = any(t in ("q4_k", "q6_k") for t, _ in tensors.values())
    want = reference.forward(hf_config(cfg), hf_weights_from(cfg, values), tokens,
                             quantized_activations=256 if k_types else True)
    assert np.std(want) > 0.3
    for chunk in (1, 5, 7, 64):  # 5 tiles; 7 q4_k's GEMM steps beside q6_k's tiles in one chunk (gemm_min_tokens)
        got = logits(path, tokens, chunk)
        assert np.max(np.abs(got[0] - want[0])) < 1e-4 * np.std(want), chunk
        assert np.max(np.abs(got - want)) < 0.15 * np.std(want), chunk
        assert np.mean(got.argmax(axis=1) == want.argmax(axis=1)) >= 0.9


def matmul(path, index, x, command=(HARNESS,)):
    """harness matmul: (type, quantized activations (T, n), their scales (T, n / 32), outputs (T, rows))"""
    np.asarray(x, dtype="<f4").tofile(str(path) + ".x")
    out = subprocess.run([*command, "matmul", str(path), str(index), str(path) + ".x"], capture_output=True,
                         text=True, check=True).stdout
    lines = out.strip().split("\n")
    rows = [np.array(line.split(), dtype=np.float64) for line in lines[1:]]
    return lines[0], np.array(rows[0::3]), np.array(rows[1::3]), np.array(rows[2::3])


def assert_matmuls_exact(path, command=(HARNESS,), tokens=5):
    """Every matrix of the file, through matmul (5 tokens: tiles of 4 tokens
    and the dot products of the fifth; 37: the GEMM steps, two whole panels
    of 16 and one of 5), against float64 products of its dequantized
    weights with run.c's own quantized activations: equal to float32
    rounding, relative to the sum of the products' magnitudes. Returns the
    types seen."""
    cfg, values = runc_file.dequantized(path)
    _, tensors = runc_file.read(path)
    names = [name for name, shape in exporter.tensor_order(cfg) if len(shape) == 2]
    rng = np.random.default_rng(5)
    seen = set()
    for index, name in enumerate(names):
        w = values[name].astype(np.float64)
        x = rng.standard_normal((tokens, w.shape[1])) * np.exp(rng.normal(0, 1, (tokens, 1)))
        wtype, q, scales, got = matmul(path, index, x, command)
        assert wtype == tensors[name][0]
        seen.add(wtype)
        if wtype in ("q4_k", "q6_k"):  # one scale per 256 values, repeated per 32
            assert np.all(scales.reshape(tokens, -1, 8) == scales.reshape(tokens, -1, 8)[:, :, :1])
        if wtype == "fp32":  # not quantized: x itself, as float32
            xq = x.astype(np.float32).astype(np.float64)
        else:
            assert np.max(np.abs(q)) == 127
            xq = q * np.repeat(scales, 32, axis=1)[:, :w.shape[1]]
            assert np.max(np.abs(xq - x)) <= 0.5 * np.max(scales) * 1.0001  # it is x, quantized
        want = xq @ w.T
        magnitude = np.abs(xq) @ np.abs(w).T
        assert np.max(np.abs(got - want) / magnitude) < 1e-5, name
    return seen


@pytest.mark.parametrize("tokens", [5, 37])
@pytest.mark.parametrize("kind", ["Q4_K_M-mixed", "Q8_0", "Q4_0", "F32"])
def test_each_matrix_times_its_quantized_input_is_exact(shared, tmp_path, kind, tokens):
    if kind == "F32":  # the same file's weights as fp32: the fp32 tiles and GEMM
        export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, "Q8_0.gguf"), "--dtype", "fp32")
    else:
        export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, kind + ".gguf"))
    seen = assert_matmuls_exact(tmp_path / "m.bin", tokens=tokens)
    assert seen == ({"q4_k", "q6_k"} if "mixed" in kind else {kind.lower().replace("f32", "fp32")})


def test_fp32_steps_add_up_their_k_blocks(shared, tmp_path):
    """256 tokens (16 panels): the fp32 GEMM steps go through a row's values in
    blocks of 512 (F32_K_BLOCK_BYTES, 512 KB of panels), so ffn_down's 768
    are two blocks whose sums are added, and the other matrices' 256 one."""
    export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, "Q8_0.gguf"), "--dtype", "fp32")
    assert assert_matmuls_exact(tmp_path / "m.bin", tokens=256) == {"fp32"}


def test_neon_k_matmuls_are_exact(shared, tmp_path, arm_harnesses):
    """The same through the NEON kernels, cross-built and run under qemu
    (and fp32 through the NEON gemm_f32, with 37 tokens)."""
    export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, "Q4_K_M-mixed.gguf"))
    export(tmp_path / "f.bin", "--gguf", os.path.join(shared, QUANTS, "Q8_0.gguf"), "--dtype", "fp32")
    for exe in arm_harnesses:
        assert assert_matmuls_exact(tmp_path / "m.bin", ("qemu-aarch64", str(exe))) == {"q4_k", "q6_k"}
        assert assert_matmuls_exact(tmp_path / "f.bin", ("qemu-aarch64", str(exe)), tokens=37) == {"fp32"}


@pytest.mark.parametrize("kind", ["Q4_K_M-mixed", "Q8_0", "Q4_0"])
def test_vnni_matmuls_are_exact(shared, tmp_path, vnni_harness, kind):
    """The same through the VNNI kernels (emulated where the machine lacks
    them): generation's dot products and tiles (5 tokens) and the GEMM steps
    (37), for the types whose integer sums VNNI does."""
    export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, kind + ".gguf"))
    for tokens in (5, 37):
        seen = assert_matmuls_exact(tmp_path / "m.bin", (str(vnni_harness),), tokens=tokens)
        assert seen == ({"q4_k", "q6_k"} if "mixed" in kind else {kind.lower()})


@pytest.mark.parametrize("kind", ["Q4_K_M-mixed", "Q8_0", "Q4_0", "F32"])
def test_avx512_matmuls_are_exact(shared, tmp_path, avx512_harness, kind):
    """The same through the AVX-512 build (SIMDe where the machine lacks it):
    its 512-bit GEMM steps (37 tokens: two panels and a part) for every type
    that has one, and the 256-bit kernels it keeps for 5 tokens."""
    if kind == "F32":
        export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, "Q8_0.gguf"), "--dtype", "fp32")
    else:
        export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, kind + ".gguf"))
    for tokens in (5, 37):
        seen = assert_matmuls_exact(tmp_path / "m.bin", (str(avx512_harness),), tokens=tokens)
        assert seen == ({"q4_k", "q6_k"} if "mixed" in kind else {kind.lower().replace("f32", "fp32")})


@pytest.mark.parametrize("kind", ["Q4_K_M-mixed", "Q3_K_M-mixed", "Q6_K", "Q5_K"])
def test_k_quant_gguf_logits_match_reference(shared, tmp_path, kind):
    export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, kind + ".gguf"))
    tokens = list(np.random.default_rng(1).integers(0, 512, 40))
    assert_quantized_logits_match(tmp_path / "m.bin", tokens)


def test_mixed_file_shows_its_types(shared, tmp_path):
    export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, "Q4_K_M-mixed.gguf"))
    p = run(tmp_path / "m.bin", "-n", "2", "--verbose")
    err = p.stderr.decode()
    assert "13 q4_k + 3 q6_k" in err
    assert "token_embedding q4_k, classifier q6_k" in err
    assert "layer 0: wq q4_k, wk q4_k, wv q4_k, wo q4_k, w1 q4_k, w2 q4_k, w3 q4_k" in err
    assert "layer 1: wq q4_k, wk q4_k, wv q6_k, wo q4_k, w1 q4_k, w2 q6_k, w3 q4_k" in err


def test_other_types_take_the_nearest_native_type(shared, tmp_path):
    for kind, want in (("Q5_K", "q8_0"), ("Q3_K", "q6_k"), ("Q2_K", "q4_k"), ("IQ4_XS", "q6_k"), ("Q4_1", "q8_0"),
                       ("Q5_0", "q6_k"), ("IQ4_NL", "q6_k"), ("Q5_1", "q8_0")):
        p = export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, kind + ".gguf"))
        assert f"16 {kind} matrices: dequantized, written as {want}" in p.stderr
        _, tensors = runc_file.read(tmp_path / "m.bin")
        assert {t for name, (t, _) in tensors.items() if name != "norm" and "norm" not in name} == {want}
    p = export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, "Q5_K.gguf"), "--dtype", "q6_k")
    assert "16 Q5_K matrices: dequantized, written as q6_k" in p.stderr


def relative_rmse(approx, exact):
    return np.sqrt(np.sum((approx - exact) ** 2) / np.sum(exact ** 2))


@pytest.mark.parametrize("dtype,ggml", [("q4_k", "Q4_K"), ("q6_k", "Q6_K")])
def test_quantizer_error_is_as_low_as_llama_cpp(shared, dtype, ggml):
    """Our q4_k/q6_k quantizer on the shared F32 file against llama.cpp's
    quantization of the same file (README: 'Quantization quality')."""
    f32 = exporter.GGUFFile(os.path.join(shared, QUANTS, "f32.gguf"))
    theirs_file = exporter.GGUFFile(os.path.join(shared, QUANTS, ggml + ".gguf"))
    ours_err, theirs_err, total = 0.0, 0.0, 0.0
    for name, (shape, _, _) in f32.tensors.items():
        if len(shape) != 2:
            continue
        x = f32.get(name)
        ours = exporter.dequantize(exporter.quantize_k(x, dtype), None, dtype, shape[1])
        theirs = theirs_file.get(name)
        ours_err += np.sum((ours - x) ** 2)
        theirs_err += np.sum((theirs - x) ** 2)
        total += np.sum(x.astype(np.float64) ** 2)
    ours_rel, theirs_rel = np.sqrt(ours_err / total), np.sqrt(theirs_err / total)
    print(dtype, "ours", ours_rel, "llama.cpp", theirs_rel)
    assert ours_rel <= 1.02 * theirs_rel


@pytest.mark.parametrize("dtype,bound", [("q4_k", 0.09), ("q6_k", 0.022)])
def test_k_quantizer_error_on_varied_rows(dtype, bound):
    """Rows of normal values at scales 100x apart, one outlier: the relative
    error of each row stays near what 4 and 6 bits give (about 0.08 and 0.02
    of the values' size for normal data), the outlier is kept within 5%, and
    a row of zeros stays zero."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 512)) * np.exp(rng.normal(0, 1.5, (8, 1)))).astype(np.float32)
    x[3, 100] = 40.0 * np.abs(x[3]).max()
    x[5] = 0
    back = exporter.dequantize(exporter.quantize_k(x, dtype), None, dtype, 512)
    for r in (0, 1, 2, 4, 6, 7):
        assert relative_rmse(back[r], x[r]) < bound, r
    assert abs(back[3, 100] - x[3, 100]) < 0.05 * x[3, 100]
    assert np.all(back[5] == 0)


K_CONFIG = {**FAMILIES["tinyllama"], "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
            "num_key_value_heads": 2}


@pytest.mark.parametrize("dtype", ["q4_k", "q6_k"])
def test_hf_export_to_k_types_matches_reference(tmp_path, dtype):
    weights = hf.random_llama(K_CONFIG, seed=11)
    hf.write_checkpoint(tmp_path / "hf", K_CONFIG, weights)
    p = export(tmp_path / "m.bin", "--hf", tmp_path / "hf", "--dtype", dtype)
    assert f"written as {dtype}" in p.stderr
    _, tensors = runc_file.read(tmp_path / "m.bin")
    assert {t for t, _ in tensors.values()} == {"fp32", dtype}
    assert_quantized_logits_match(tmp_path / "m.bin", list(np.random.default_rng(2).integers(0, 512, 40)))


@pytest.mark.parametrize("dtype,fallback", [("q4_k", "q4_0"), ("q6_k", "q8_0")])
def test_rows_not_whole_k_blocks_fall_back(tmp_path, dtype, fallback):
    """hidden 352 (not a multiple of 256): w2 reads rows of 352 values and falls back; the others are K."""
    config = {**K_CONFIG, "intermediate_size": 352}
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, seed=1))
    p = export(tmp_path / "m.bin", "--hf", tmp_path / "hf", "--dtype", dtype)
    assert f"written as {fallback} ({dtype} needs rows of whole 256-value blocks)" in p.stderr
    _, tensors = runc_file.read(tmp_path / "m.bin")
    assert tensors["layers.0.w2"][0] == fallback and tensors["layers.0.w1"][0] == dtype
    assert_quantized_logits_match(tmp_path / "m.bin", list(range(1, 30)))


# ---- damaged files ----

def k_model(tmp_path, shared):
    export(tmp_path / "m.bin", "--gguf", os.path.join(shared, QUANTS, "Q4_K_M-mixed.gguf"))
    return bytearray((tmp_path / "m.bin").read_bytes())


def refused(tmp_path, data, message):
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    p = run(tmp_path / "bad.bin", "-n", "2", "-z", tmp_path / "tokenizer.bin", check=False)
    err = p.stderr.decode()
    assert p.returncode == 1 and message in err and err.count("\n") == 1, err


def test_run_refuses_damaged_k_files(shared, tmp_path):
    good = k_model(tmp_path, shared)
    emb = 384  # the embedding's first Q4_K block: after the header, the type table and the layer table
    for field, bits in ((0, b"\x00\x7c"), (2, b"\x01\x7e")):  # d = +inf, dmin = NaN
        bad = bytearray(good)
        bad[emb + field:emb + field + 2] = bits
        refused(tmp_path, bad, "token_embedding has a NaN or infinite scale in block 0")
    refused(tmp_path, good[:len(good) - 1000], "file is truncated")
    bad = bytearray(good)
    bad[256] = 9  # the embedding's type
    refused(tmp_path, bad, "token_embedding has unknown weight type 9")
    bad = bytearray(good)
    bad[256] = 2  # q4_0 where the data is q4_k: the sizes no longer add up
    refused(tmp_path, bad, "")


def test_run_refuses_k_type_on_rows_not_whole_blocks(tmp_path):
    """A type table claiming q4_k for rows of 128 values."""
    config = FAMILIES["tinyllama"]
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, seed=1))
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf", "--dtype", "q4_0")
    data = bytearray((tmp_path / "m.bin").read_bytes())
    data[256] = 3
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    p = run(tmp_path / "bad.bin", "-n", "2", check=False)
    assert p.returncode == 1 and b"is q4_k with rows of 128 values, not a multiple of 256" in p.stderr


def gguf_tensor_offset(path, name):
    g = exporter.GGUFFile(path)
    return g.data_start + g.tensors[name][2]


def test_export_refuses_damaged_k_gguf(shared, tmp_path):
    src = os.path.join(shared, QUANTS, "Q4_K_M-mixed.gguf")
    data = bytearray(open(src, "rb").read())
    off = gguf_tensor_offset(src, "blk.0.attn_q.weight")
    bad = bytearray(data)
    bad[off + 144 * 3 + 2: off + 144 * 3 + 4] = b"\x00\x7e"  # dmin of block 3: NaN
    (tmp_path / "bad.gguf").write_bytes(bytes(bad))
    p = export(tmp_path / "bad.bin", "--gguf", tmp_path / "bad.gguf", check=False)
    assert p.returncode == 1 and "tensor layers.0.wq (Q4_K) has a NaN or infinite scale in block 3" in p.stderr
    p = export(tmp_path / "bad.bin", "--gguf", tmp_path / "bad.gguf", "--dtype", "fp32", check=False)
    assert p.returncode == 1 and "tensor layers.0.wq has NaN or infinite values" in p.stderr
    (tmp_path / "short.gguf").write_bytes(bytes(data[:len(data) - 100]))
    p = export(tmp_path / "bad.bin", "--gguf", tmp_path / "short.gguf", check=False)
    assert p.returncode == 1 and "lies outside the file" in p.stderr


def patched_gguf(tmp_path, ttype, cols):
    """A GGUF whose one tensor (4 rows of `cols` F32 values) claims ggml type ttype."""
    meta = {"general.architecture": "llama"}
    gw.write_gguf(tmp_path / "m.gguf", meta, {"token_embd.weight": (np.zeros((4, cols), np.float32), gw.F32)})
    data = bytearray((tmp_path / "m.gguf").read_bytes())
    # the tensor info's type field: after its name, n_dims and two dims
    i = data.index(b"token_embd.weight") + len("token_embd.weight") + 4 + 16
    data[i:i + 4] = struct.pack("<I", ttype)
    (tmp_path / "m.gguf").write_bytes(bytes(data))
    return export(tmp_path / "m.bin", "--gguf", tmp_path / "m.gguf", check=False)


def test_export_refuses_k_rows_that_are_not_whole_blocks(tmp_path):
    p = patched_gguf(tmp_path, 12, 100)
    assert p.returncode == 1 and "(Q4_K) has rows of 100 values, not a whole number of its 256-value blocks" in p.stderr


@pytest.mark.parametrize("ttype,name", [(16, "IQ2_XXS"), (19, "IQ1_S"), (21, "IQ3_S"), (35, "TQ2_0"), (77, "unknown type 77")])
def test_export_names_types_it_cannot_read(tmp_path, ttype, name):
    p = patched_gguf(tmp_path, ttype, 256)
    assert p.returncode == 1 and f"has ggml type {name}, which export.py cannot read" in p.stderr
    assert "Q4_K_M" in p.stderr
