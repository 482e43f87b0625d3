"""Bad input: damaged model and tokenizer files, missing files and bad flags
each get one clear error line, exit status 1, and never a crash."""

import struct

import numpy as np
import pytest

import hf
from conftest import TOKENIZER, export, run

CONFIG = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4,
          "num_key_value_heads": 2, "vocab_size": 32000, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A valid tiny model in this project's format, with the Llama 2 vocabulary size."""
    d = tmp_path_factory.mktemp("model")
    hf.write_checkpoint(d / "hf", CONFIG, hf.random_llama(CONFIG, 0))
    export(d / "model.bin", "--hf", d / "hf")
    return d / "model.bin"


def fails(*args, match):
    p = run(*args, check=False)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, f"exit {p.returncode}, stderr: {err}"
    assert match in err, f"{match!r} not in {err!r}"
    assert err.count("error:") == 1
    return err


def damaged(tmp_path, model, edit):
    data = bytearray(model.read_bytes())
    edit(data)
    path = tmp_path / "damaged.bin"
    path.write_bytes(bytes(data))
    return path


def test_valid_model_runs(model):
    assert run(model, "-z", TOKENIZER, "-n", "5", "-t", "0").returncode == 0


def test_missing_model_file(tmp_path):
    err = fails(tmp_path / "nope.bin", match="cannot open model")
    assert "nope.bin" in err


@pytest.mark.parametrize("keep", [0, 3, 100, 255, 300, 5000])
def test_truncated_model(tmp_path, model, keep):
    path = damaged(tmp_path, model, lambda d: d.__delitem__(slice(keep, None)))
    fails(path, "-z", TOKENIZER, match=str(path))


def test_truncated_by_one_byte(tmp_path, model):
    path = damaged(tmp_path, model, lambda d: d.pop())
    fails(path, "-z", TOKENIZER, match="truncated")


def test_trailing_bytes(tmp_path, model):
    path = damaged(tmp_path, model, lambda d: d.extend(b"\0" * 64))
    fails(path, "-z", TOKENIZER, match="describes")


def test_wrong_magic(tmp_path, model):
    path = damaged(tmp_path, model, lambda d: d.__setitem__(slice(0, 4), b"GGUF"))
    fails(path, "-z", TOKENIZER, match="not a model file")


def test_unsupported_version(tmp_path, model):
    path = damaged(tmp_path, model, lambda d: struct.pack_into("<I", d, 4, 99))
    fails(path, "-z", TOKENIZER, match="version 99 is not supported")


FIELDS = {"dim": 8, "hidden_dim": 12, "n_layers": 16, "n_heads": 20, "n_kv_heads": 24, "head_dim": 28,
          "vocab_size": 32, "seq_len": 36}


@pytest.mark.parametrize("field,value,match", [
    ("dim", 0, "dim is 0"),
    ("dim", -64, "dim is -64"),
    ("n_layers", 2**31 - 1, "n_layers is 2147483647"),
    ("vocab_size", 2**30, "vocab_size is 1073741824"),
    ("n_kv_heads", 3, "does not divide n_heads"),
    ("head_dim", 7, "must be even"),
    ("seq_len", -1, "seq_len is -1"),
    ("hidden_dim", 1 << 19, "truncated"),        # sizes now exceed the file
    ("dim", (1 << 20) - 2, "truncated"),
])
def test_impossible_header_values(tmp_path, model, field, value, match):
    path = damaged(tmp_path, model, lambda d: struct.pack_into("<i", d, FIELDS[field], value))
    fails(path, "-z", TOKENIZER, match=match)


@pytest.mark.parametrize("offset,value,match", [
    (40, float("nan"), "rope_theta"), (60, 0.0, "norm_eps"), (60, float("inf"), "norm_eps"),
    (44, 0.5, "rope scaling factor"), (132, -1.0, "rope_local_theta"), (132, float("nan"), "rope_local_theta"),
    (136, 0.5, "rope_linear_factor"), (144, -50.0, "soft-capping"), (148, float("inf"), "soft-capping"),
])
def test_bad_float_header_values(tmp_path, model, offset, value, match):
    path = damaged(tmp_path, model, lambda d: struct.pack_into("<f", d, offset, value))
    fails(path, "-z", TOKENIZER, match=match)


@pytest.mark.parametrize("offset,value,match", [
    (64, 0x80, "unknown flags"), (68, 7, "weight type 7"), (72, 40000, "bos_id"), (76, 9, "n_eos"),
    (80, -5, "eos id"), (140, 2, "activation 2"), (140, -1, "activation -1"),
])
def test_bad_header_fields(tmp_path, model, offset, value, match):
    path = damaged(tmp_path, model, lambda d: struct.pack_into("<i", d, offset, value))
    fails(path, "-z", TOKENIZER, match=match)


def legacy_header(tmp_path, header, payload=4096):
    path = tmp_path / "legacy.bin"
    path.write_bytes(struct.pack("<7i", *header) + bytes(payload))
    return path


@pytest.mark.parametrize("header,match", [
    ((64, 172, 5, 7, 7, 512, 512), "not a multiple of n_heads"),   # n_heads does not divide dim
    ((64, 172, 5, 8, 3, 512, 512), "does not divide n_heads"),
    ((64, 172, 5, 8, 4, 512, 512), "truncated"),
    ((64, 172, 5, 8, 4, -(2**31), 512), "vocab_size is 0"),
    ((2**30, 2**30, 2**30, 1, 1, 2**30, 2**30), "larger than"),  # products would overflow 64 bits
])
def test_bad_legacy_headers(tmp_path, header, match):
    fails(legacy_header(tmp_path, header), "-z", TOKENIZER, match=match)


def test_tiny_file(tmp_path):
    p = tmp_path / "tiny.bin"
    p.write_bytes(b"ab")
    fails(p, match="too small")


def test_directory_as_model(tmp_path):
    fails(tmp_path, match="not a regular file")


# --- tokenizer files ---

def test_tokenizer_size_must_match_model(model, shared):
    fails(model, "-z", f"{shared}/models/tok512.bin", match="tokenizer has 512 tokens but the model has")


def test_missing_tokenizer(model, tmp_path):
    fails(model, "-z", tmp_path / "none.bin", match="none.bin: cannot open")


@pytest.mark.parametrize("keep", [0, 2, 20, 33, 1000, -1])
def test_truncated_tokenizer(tmp_path, keep):
    data = open(TOKENIZER, "rb").read()
    path = tmp_path / "tok.bin"
    path.write_bytes(data[:keep])
    fails("-m", "tokenize", "-z", path, "-i", "hi", match="tok.bin")


@pytest.mark.parametrize("offset,value,match", [
    (4, 7, "version 7"), (8, -1, "vocab_size"), (16, 99999, "outside the vocabulary"), (28, 64, "flags"),
    (32, 7, "unknown tokenizer kind 7"), (36, 9, "unknown pre-tokenizer 9"), (40, -5, "-5 merges"), (40, 5, "truncated"),
    (68, 99, "unknown type 99"), (72, -3, "invalid length"), (72, 2**30, "invalid length"),
])
def test_damaged_tokenizer_fields(tmp_path, offset, value, match):
    data = bytearray(open(TOKENIZER, "rb").read())
    struct.pack_into("<i", data, offset, value)
    path = tmp_path / "tok.bin"
    path.write_bytes(bytes(data))
    fails("-m", "tokenize", "-z", path, "-i", "hi", match=match)


def test_legacy_tokenizer_with_bad_length(tmp_path):
    path = tmp_path / "tok.bin"
    path.write_bytes(struct.pack("<Ifi", 10, 0.0, 1000) + b"abc")
    fails("-m", "tokenize", "-z", path, "-i", "hi", match="truncated or corrupt")


# --- flags ---

@pytest.mark.parametrize("args,match", [
    (["-t", "-1"], "-t must be between"),
    (["-t", "abc"], "-t expects a number"),
    (["-t", "nan"], "-t expects a number"),
    (["-p", "1.5"], "-p must be between"),
    (["-n", "-5"], "-n must be between"),
    (["-n", "99999999999"], "-n must be between"),
    (["-s", "-1"], "-s must be between"),
    (["-n"], "needs a value"),
    (["-q", "1"], "unknown option -q"),
    (["--temp", "1"], "unexpected argument"),
    (["-m", "dance"], "unknown mode 'dance'"),
    (["-i", "a", "-f", "b"], "not both"),
])
def test_bad_flags(model, args, match):
    fails(model, "-z", TOKENIZER, *args, match=match)


def test_no_model_given():
    fails("-i", "hello", match="no model file given")


def test_prompt_longer_than_steps(model):
    fails(model, "-z", TOKENIZER, "-n", "3", "-i", "one two three four five", match="raise -n")


def test_perplexity_text_longer_than_context(model):
    fails(model, "-z", TOKENIZER, "-m", "perplexity", "-i", "word " * 300, match="context is 256")


def test_prompt_file_with_nul(model, tmp_path):
    (tmp_path / "p.txt").write_bytes(b"a\0b")
    fails(model, "-z", TOKENIZER, "-f", tmp_path / "p.txt", match="NUL byte")


def test_help_exits_zero():
    p = run("-h")
    assert p.returncode == 0 and b"Usage" in p.stdout


def test_steps_above_context_are_capped_with_a_note(model):
    p = run(model, "-z", TOKENIZER, "-n", "100000", "-t", "0")
    assert p.returncode == 0 and b"using 256" in p.stderr


# --- export.py ---

def test_export_rejects_unsupported_model_type(tmp_path):
    hf.write_checkpoint(tmp_path / "hf", {**CONFIG, "model_type": "gpt2"}, hf.random_llama(CONFIG, 0))
    p = export(tmp_path / "o.bin", "--hf", tmp_path / "hf", check=False)
    assert p.returncode == 1 and "model_type 'gpt2' is not supported" in p.stderr


def test_export_rejects_damaged_safetensors(tmp_path):
    hf.write_checkpoint(tmp_path / "hf", CONFIG, hf.random_llama(CONFIG, 0))
    st = tmp_path / "hf" / "model.safetensors"
    st.write_bytes(st.read_bytes()[:5000])
    p = export(tmp_path / "o.bin", "--hf", tmp_path / "hf", check=False)
    assert p.returncode == 1 and "outside the file" in p.stderr


def test_export_rejects_missing_tensor(tmp_path):
    w = hf.random_llama(CONFIG, 0)
    del w["model.layers.0.mlp.up_proj.weight"]
    hf.write_checkpoint(tmp_path / "hf", CONFIG, w)
    p = export(tmp_path / "o.bin", "--hf", tmp_path / "hf", check=False)
    assert p.returncode == 1 and "model.layers.0.mlp.up_proj.weight is missing" in p.stderr
    assert not (tmp_path / "o.bin").exists()


def test_export_rejects_non_sentencepiece_file(tmp_path):
    (tmp_path / "t.model").write_bytes(b"\xff" * 50)
    p = export(tmp_path / "t.bin", "--tokenizer", tmp_path / "t.model", check=False)
    assert p.returncode == 1 and "not a SentencePiece model" in p.stderr


def test_export_missing_input(tmp_path):
    p = export(tmp_path / "o.bin", "--llama2c", tmp_path / "none.bin", check=False)
    assert p.returncode == 1 and "no such file" in p.stderr


def test_token_longer_than_declared_maximum(tmp_path):
    data = bytearray(open(TOKENIZER, "rb").read())
    struct.pack_into("<i", data, 12, 3)  # max_token_length 3; "<unk>" is 5 bytes
    path = tmp_path / "tok.bin"
    path.write_bytes(bytes(data))
    fails("-m", "tokenize", "-z", path, "-i", "hi", match="longer than the declared maximum")


@pytest.mark.parametrize("prompt", ["", "\udcff\udcfe invalid", "<s></s><|eot_id|>", "\t\n \r"])
def test_unusual_prompts_run(model, prompt):
    p = run(model, "-z", TOKENIZER, "-n", "40", "-t", "0", "-i", prompt.encode("utf-8", "surrogateescape"))
    assert p.returncode == 0


def test_prompt_of_only_special_token_text_is_plain_text():
    ids = run("-m", "tokenize", "-z", TOKENIZER, "-i", "<s></s>").stdout.split()
    assert ids[0] == b"1" and b"2" not in ids[1:] and b"1" not in ids[1:]


def test_kv_cache_larger_than_memory_is_refused_before_the_run(tmp_path):
    """A model that declares 16M positions, run over all of them (-n 0): its
    KV cache (550 GB) cannot fit, and the run says so before it starts
    instead of being killed for memory later."""
    config = {"vocab_size": 32000, "num_hidden_layers": 32, "hidden_size": 128, "intermediate_size": 128,
              "tie_word_embeddings": True,
              "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 1 << 24}
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, 0))
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf")
    p = run(tmp_path / "m.bin", "-z", TOKENIZER, "-n", "0", "-i", "hi", check=False)
    err = p.stderr.decode()
    assert p.returncode == 1 and "the KV cache for 16777216 positions needs 549.8 GB, more than this machine's" in err
    assert "ask for fewer positions with -n" in err and err.count("\n") == 1


def test_linear_and_llama3_rope_scaling_together_are_refused(tmp_path, model):
    def edit(d):
        struct.pack_into("<3fi", d, 44, 8.0, 1.0, 4.0, 8192)  # Llama 3.1 scaling
        struct.pack_into("<f", d, 136, 2.0)                    # and linear
    fails(damaged(tmp_path, model, edit), "-z", TOKENIZER, match="only one kind of rope scaling")


def test_sliding_layer_without_a_window_is_refused(tmp_path, model):
    """The layer table marks layer 0 as sliding-window, but the header's window is 0."""
    def edit(d):
        struct.pack_into("<i", d, 112, 0)
        n_matrices = 1 + 7 * CONFIG["num_hidden_layers"] + 1
        d[256 + -(-n_matrices // 64) * 64] = 2
    fails(damaged(tmp_path, model, edit), "-z", TOKENIZER, match="layer 0 is a sliding-window layer")


@pytest.mark.parametrize("offset,value,match", [(152, 3, "rope_dim 3"), (152, 64, "rope_dim 64"), (152, -2, "rope_dim -2")])
def test_bad_rope_dim_is_refused(tmp_path, model, offset, value, match):
    path = damaged(tmp_path, model, lambda d: struct.pack_into("<i", d, offset, value))
    fails(path, "-z", TOKENIZER, match=match)


def test_bad_longrope_factor_is_refused(tmp_path):
    """A Phi-3.5-shaped file whose long factor table holds a NaN."""
    from test_families import FAMILIES
    config = {**FAMILIES["phi3.5"], "vocab_size": 32000}
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, 0))
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf")
    data = bytearray((tmp_path / "m.bin").read_bytes())
    n_tables = 2 * 64  # the type table and the layer table, each padded to 64 bytes
    struct.pack_into("<f", data, 256 + n_tables + 64 + 4 * 5, float("nan"))  # the long table's sixth factor
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    fails(tmp_path / "bad.bin", "-z", TOKENIZER, match="LongRoPE factor 5 is nan")


def test_unknown_kv_cache_type_is_refused(model):
    fails(model, "-z", TOKENIZER, "--kv-cache", "int8", match="--kv-cache: unknown type 'int8' (fp32, fp16)")


def test_fp16_kv_cache_halves_the_cache_the_model_card_reports(model):
    cards = [run(model, "-z", TOKENIZER, "-n", "64", "--verbose", "--kv-cache", kv).stderr.decode() for kv in
             ("fp32", "fp16")]
    sizes = [float(c.split("KV cache for 64 positions is ")[1].split(" MB")[0]) for c in cards]
    assert "(fp16)" in cards[1] and sizes[1] == pytest.approx(sizes[0] / 2, abs=0.06)


@pytest.mark.parametrize("edit,match", [
    (lambda d: struct.pack_into("<I", d, 160, 64), "unknown sampling bits 0x40"),
    (lambda d: struct.pack_into("<I", d, 160, 2) or struct.pack_into("<f", d, 168, 1.5),
     "recommended sampling value is out of range"),  # top_p
    (lambda d: struct.pack_into("<I", d, 160, 4) or struct.pack_into("<i", d, 180, -3), "out of range"),  # top_k
])
def test_bad_recommended_sampling_is_refused(tmp_path, model, edit, match):
    data = bytearray(model.read_bytes())
    edit(data)
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    fails(tmp_path / "bad.bin", "-z", TOKENIZER, match=match)
