"""q8_0 and q4_0 weights: the quantizer's error bounds, every SIMD dot
product against its scalar version, and the quantized forward pass against
the numpy reference run on the dequantized weights with run.c's activation
quantization."""

import os
import subprocess
import sys

import numpy as np
import pytest

import hf
import reference
from conftest import HARNESS, ROOT, export, harness, logits, run
from test_families import FAMILIES

sys.path.insert(0, ROOT)
import export as exporter  # noqa: E402  (export.py's quantizer, to dequantize for the reference)


@pytest.mark.parametrize("dtype,levels", [("q8_0", 127), ("q4_0", 8)])
def test_quantization_error_is_within_half_a_step(dtype, levels):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(37, 100)).astype(np.float32)  # 100 columns: padded to 128
    values, scales = exporter.quantize(w, dtype)
    back = exporter.dequantize(values, scales, dtype, 100)
    step = np.repeat(np.abs(scales.astype(np.float32)), 32, axis=1)[:, :100]
    # q4_0 maps the block's extreme to -8 exactly; the other end can reach +8,
    # which 4 bits cannot hold (7 is the top): up to one step there
    bound = 0.5 if dtype == "q8_0" else 1.0
    assert np.all(np.abs(back - w) <= step * bound * (1 + 1e-3) + 1e-7)
    assert values.shape == ((37, 128) if dtype == "q8_0" else (37, 64))


KERNELS = ("f32", "q8_0", "q4_0", "tile_f32", "tile_q8_0", "tile_q4_0", "attention_scores", "weighted_sum",
           "q4_k", "q6_k", "tile_q4_k", "tile_q6_k", "attention_scores_f16", "weighted_sum_f16", "gemm_f32",
           "gemm_i16", "gemm_u8", "column_q8_0", "column_q4_0", "softmax", "gate_silu", "gate_gelu")


def assert_kernels_equal_scalar(out):
    """Each kernel's worst difference from its scalar version, relative to the
    sum of the products' magnitudes: float rounding is ~1e-7 of that; a
    misread element, block, scale or tail costs orders of magnitude more."""
    result = dict(line.split(" ", 1) for line in out.strip().splitlines())
    print(result)  # which SIMD path this build uses
    for kernel in KERNELS:
        assert float(result[kernel]) < 1e-5, kernel
    # the SIMD exponential against libm's expf, value by value: within ~2 float
    # roundings (1.2e-7 here; leaving out the series' last term, r^7 / 7!, gives 2.5e-7)
    assert float(result["exp"]) < 2e-7
    assert result["quantize"] == "0"  # activations quantize identically
    assert result["unpack"] == "0"  # the prompts' GEMM steps unpack weight rows identically
    return result["simd"]


def test_simd_kernels_equal_scalar_on_odd_sizes():
    assert_kernels_equal_scalar(subprocess.run([HARNESS, "kernels"], capture_output=True, text=True, check=True).stdout)


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
@pytest.mark.parametrize("family", ["tinyllama", "qwen2.5", "llama3.2"])
def test_quantized_forward_matches_reference(tmp_path, family, dtype):
    """Activations are quantized to int8 per block of 32 before each matmul,
    and the reference does the same on the dequantized weights. They agree to
    float precision except where a value lies within float32's error of a
    rounding boundary: there run.c (float32) and the reference (float64) may
    round it one step apart, which then spreads to later positions. The
    kernels themselves are held exactly to their scalar versions above; this
    test checks the quantized model end to end, so it allows such steps but
    nothing more (a misread block or scale costs far more than 5%)."""
    config = FAMILIES[family]
    weights = hf.random_llama(config, seed=3)
    full = hf.write_checkpoint(tmp_path / "hf", config, weights)
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf", "--dtype", dtype)
    deq = {k: exporter.dequantize(*exporter.quantize(v, dtype), dtype, v.shape[1]) if v.ndim == 2 else v
           for k, v in weights.items()}
    tokens = list(np.random.default_rng(4).integers(0, config["vocab_size"], 40))
    want = reference.forward(full, deq, tokens, quantized_activations=True)
    assert np.std(want) > 0.3
    # by gemm_min_tokens: 5 tiles; 7 gemm_u8's steps (q4_0, and q8_0 with VNNI; q8_0's tiles without); 13 steps
    for chunk in (1, 5, 7, 13):
        got = logits(tmp_path / "m.bin", tokens, chunk)
        assert np.max(np.abs(got - want)) < 0.05 * np.std(want)
        assert np.mean(got.argmax(axis=1) == want.argmax(axis=1)) >= 0.9
        assert np.abs(got[0] - want[0]).max() < 0.05 * np.std(want)


@pytest.mark.parametrize("dtype", ["fp32", "q8_0", "q4_0"])
def test_matrices_of_one_input_at_once_equal_one_by_one(tmp_path, dtype):
    """matmuls, which runs wq, wk and wv (and w1 and w3) as one list of rows
    shared by stealing, gives each matrix's outputs exactly as matmul gives
    them alone: 1, 3 and 5 tokens, 1 and 2 threads, wk and wv of 10 rows
    (their last unit of 4 rows holds 2, in the middle of the list)."""
    config = {**FAMILIES["tinyllama"], "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 10}
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, seed=7))
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf", "--dtype", dtype)
    rng = np.random.default_rng(8)

    def outputs(indices, env):  # harness matmul's line of outputs for each token
        return harness("matmul", tmp_path / "m.bin", indices, tmp_path / "x", env=env).strip().split("\n")[3::3]
    for tokens in (1, 3, 5):
        rng.normal(size=(tokens, 128)).astype("<f4").tofile(tmp_path / "x")
        for threads in ("1", "2"):
            env = dict(os.environ, OMP_NUM_THREADS=threads)
            for together in ("1,2,3", "5,7"):  # wq, wk, wv; w1, w3 of the first layer
                alone = [outputs(i, env) for i in together.split(",")]
                assert outputs(together, env) == [" ".join(parts) for parts in zip(*alone)], (tokens, threads, together)


def test_quantized_model_files_are_smaller(tmp_path):
    config = FAMILIES["tinyllama"]
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, 0))
    sizes = {}
    for dtype in ("fp32", "q8_0", "q4_0"):
        export(tmp_path / f"{dtype}.bin", "--hf", tmp_path / "hf", "--dtype", dtype)
        sizes[dtype] = os.path.getsize(tmp_path / f"{dtype}.bin")
    assert sizes["q8_0"] < 0.3 * sizes["fp32"] and sizes["q4_0"] < 0.6 * sizes["q8_0"]


def test_nan_scale_is_rejected(tmp_path):
    config = FAMILIES["tinyllama"]
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, 0))
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf", "--dtype", "q8_0")
    data = bytearray((tmp_path / "m.bin").read_bytes())
    # the embedding's 512 rows of 4 blocks start at offset 384 (the 256-byte header,
    # then the type and layer tables, each padded to 64 bytes); a row is one group:
    # 4 fp16 scales, then 4 blocks of 32 int8 (136 bytes). Row 3's second scale:
    data[384 + 3 * 136 + 2: 384 + 3 * 136 + 4] = b"\x00\x7e"  # fp16 NaN
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    p = run(tmp_path / "bad.bin", "-n", "4", check=False)
    assert p.returncode == 1 and b"NaN or infinite scale in block 13" in p.stderr


@pytest.fixture(scope="module")
def arm_harnesses(tmp_path_factory):
    """The harness cross-built for ARM (with and without the dotprod extension),
    run under qemu: the NEON kernels, tested on this x86 machine."""
    import shutil
    if not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")):
        if os.environ.get("CI"):
            pytest.fail("CI installs gcc-aarch64-linux-gnu and qemu-user to test the NEON kernels")
        pytest.skip("gcc-aarch64-linux-gnu and qemu-user are not installed: NEON kernels not tested")
    d = tmp_path_factory.mktemp("arm")
    exes = []
    for arch in ("armv8-a", "armv8.2-a+dotprod"):
        exe = d / f"harness-{arch.replace('+', '-')}"
        subprocess.run(["aarch64-linux-gnu-gcc", "-std=c11", "-O2", f"-march={arch}", "-static", "-Wall", "-Wextra",
                        "-Wno-unused-function", "-o", exe, os.path.join(ROOT, "tests", "harness.c"), "-lm"],
                       check=True)
        exes.append(exe)
    return exes


def test_neon_kernels_equal_scalar(arm_harnesses):
    for exe in arm_harnesses:
        out = subprocess.run(["qemu-aarch64", exe, "kernels"], capture_output=True, text=True, check=True).stdout
        assert assert_kernels_equal_scalar(out) == "NEON"


def simde_harness(tmp_path_factory, source, what):
    """The harness from tests/SOURCE, built for this x86 machine with
    -march=native; the instructions of WHAT it lacks come from SIMDe."""
    import platform
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"the {what} kernels are x86's")
    if not os.path.exists("/usr/include/simde/x86/avx512.h"):
        if os.environ.get("CI"):
            pytest.fail(f"CI installs libsimde-dev to test the {what} kernels")
        pytest.skip(f"libsimde-dev is not installed: {what} kernels not tested on this machine")
    exe = tmp_path_factory.mktemp(what) / f"harness-{what}"
    subprocess.run(["cc", "-std=c11", "-O2", "-march=native", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-function",
                    "-Wno-psabi", "-o", exe, os.path.join(ROOT, "tests", source), "-lm"], check=True)
    return exe


@pytest.fixture(scope="module")
def vnni_harness(tmp_path_factory):
    """The harness with run.c's 256-bit VNNI kernels (tests/harness_vnni.c),
    with the two VNNI instructions emulated by SIMDe where the machine lacks
    them, run natively where it has them."""
    return simde_harness(tmp_path_factory, "harness_vnni.c", "VNNI")


@pytest.fixture(scope="module")
def avx512_harness(tmp_path_factory):
    """The harness with run.c's AVX-512 kernels (tests/harness_avx512.c), with
    SIMDe standing in for AVX-512 where the machine lacks it."""
    return simde_harness(tmp_path_factory, "harness_avx512.c", "AVX-512")


def assert_simd_path(exe, name):
    """harness kernels through EXE: every kernel equal to its scalar version,
    and the path that ran is NAME (printed, so the test output shows it)."""
    out = subprocess.run([exe, "kernels"], capture_output=True, text=True, check=True).stdout
    simd = assert_kernels_equal_scalar(out)
    if simd == "scalar":  # this x86 machine lacks AVX2 (FMA, F16C): nothing of these paths is built
        pytest.skip(f"no AVX2 here: the {name} kernels are not built")
    assert simd == name


def test_vnni_kernels_equal_scalar(vnni_harness):
    assert_simd_path(vnni_harness, "AVX2+VNNI")


def test_avx512_kernels_equal_scalar(avx512_harness):
    """The GEMM steps in 512-bit registers (gemm_f32, gemm_i16 with its 6
    rows, gemm_u8) against their scalar definitions, the rest as in AVX2."""
    assert_simd_path(avx512_harness, "AVX-512+VNNI")


def test_neon_forward_matches_reference(arm_harnesses, tmp_path):
    config = FAMILIES["qwen2.5"]
    weights = hf.random_llama(config, seed=5)
    full = hf.write_checkpoint(tmp_path / "hf", config, weights)
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf")
    tokens = list(np.random.default_rng(0).integers(0, config["vocab_size"], 12))
    want = reference.forward(full, weights, tokens)
    for exe in arm_harnesses:
        out = subprocess.run(["qemu-aarch64", exe, "logits", tmp_path / "m.bin", "5", *map(str, tokens)],
                             capture_output=True, text=True, check=True).stdout
        got = np.array([[float(v) for v in line.split()] for line in out.strip().split("\n")])
        assert np.max(np.abs(got - want)) < 1e-4 * max(1.0, np.std(want))


def test_version_2_quantized_files_are_refused_with_a_way_out(tmp_path):
    """Format version 3 keeps each group of blocks' scales beside them: a
    version 2 file's q8_0 rows cannot be read as version 3's, so run.c says
    to export the model again; a version 2 file of fp32 matrices, whose
    layout did not change, still runs."""
    config = FAMILIES["tinyllama"]
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, 0))
    for dtype in ("q8_0", "fp32"):
        export(tmp_path / f"{dtype}.bin", "--hf", tmp_path / "hf", "--dtype", dtype)
        data = bytearray((tmp_path / f"{dtype}.bin").read_bytes())
        assert data[4:8] == (3).to_bytes(4, "little")
        data[4:8] = (2).to_bytes(4, "little")
        (tmp_path / f"v2-{dtype}.bin").write_bytes(bytes(data))
    p = run(tmp_path / "v2-q8_0.bin", "-n", "4", check=False)
    assert p.returncode == 1 and b"layout of format version 2" in p.stderr and b"export the model again" in p.stderr
    tokens = [1, 5, 9, 200]
    np.testing.assert_array_equal(logits(tmp_path / "v2-fp32.bin", tokens), logits(tmp_path / "fp32.bin", tokens))
