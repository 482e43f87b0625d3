"""Byte-level BPE (Llama 3, SmolLM2, Qwen2.5): llama.cpp's test vectors, and
a few thousand varied texts against tests/ref_bpe.py."""

import json
import os

import pytest

import ref_bpe
from conftest import export, harness, run
from test_tokenizer import assert_llama_cpp_cases, encode_all, varied_texts


@pytest.fixture(scope="module")
def llama3(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("llama3") / "tokenizer.bin"
    export(out, "--tokenizer", os.path.join(shared, "tokenizers", "llama3", "tokenizer.model"))
    return out


@pytest.fixture(scope="module")
def smollm2(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "tokenizer.bin"
    export(out, "--tokenizer", os.path.join(shared, "tokenizers", "smollm2", "tokenizer.json"))
    return out


def byte_level_texts(shared):
    """The SentencePiece test texts plus what stresses the pre-tokenizers:
    contractions in any case, digit runs, newlines inside whitespace."""
    extra = ["I'M here, YOU'RE there, it'S", "'ll 'LL 'Ve ſ 'ſ", "1234567 12 3 ٣٤٥ ½", "a\r\n\r\n  b",
             "tabs\t\tand  \n spaces   ", "  leading", "trailing  ", "x\u00a0y\u3000z", "emoji 👋🏽 and 中文字",
             "\n", "\r", " \n ", "'", "''", "a'b", "don't!!!\n\n", "$100.00 or €5,99", "<|eot_id|>"]
    return varied_texts(shared, seed=1) + [t.encode() for t in extra]


def test_llama_cpp_llama_bpe_cases(shared, llama3, tmp_path):
    assert_llama_cpp_cases(shared, tmp_path, llama3, "bpe")


def assert_same_as_reference(tmp_path, tokenizer, reference, texts):
    got = encode_all(tmp_path, tokenizer, texts)
    failures = [(t, g, reference.encode(t)) for t, g in zip(texts, got) if g != reference.encode(t)]
    assert not failures, f"{len(failures)} of {len(texts)} texts differ, first: {failures[0]}"


def test_llama3_equals_reference_on_varied_text(shared, llama3, tmp_path):
    ref = ref_bpe.Tiktoken(os.path.join(shared, "tokenizers", "llama3", "tokenizer.model"))
    texts = byte_level_texts(shared)
    assert len(texts) >= 3000
    assert_same_as_reference(tmp_path, llama3, ref, texts)


def test_smollm2_equals_reference_on_varied_text(shared, smollm2, tmp_path):
    ref = ref_bpe.TokenizerJson(os.path.join(shared, "tokenizers", "smollm2", "tokenizer.json"))
    assert_same_as_reference(tmp_path, smollm2, ref, byte_level_texts(shared))


O200K_TEXTS = ["HELLOworld Hello HELLO hELLO ĲsselmeerǅungÐörðǲz", "ʰʰA ʰBʰ Aʰ!", "e\u0301cole ECOLE\u0301S \u0301a",
               "don'T CAN'T I'M they'RE ſ'S", "a/b//\n/c !!/\n\n/", "ΣΊΣΥΦΟΣ σίσυφος Ǆemal ǅemal ǆemal",
               "\tTab \u00a0Nbsp x\u3000Ideo", "ﬁne ℌello ⅫIV"]


@pytest.mark.parametrize("family,pattern", [("qwen2", ref_bpe.QWEN2), ("llama3", ref_bpe.LLAMA3),
                                            ("o200k", ref_bpe.O200K)])
def test_split_pretokenizers_from_tokenizer_json(shared, tmp_path, family, pattern):
    """Qwen2's, Llama 3's and o200k's (Phi-4-mini) tokenizer.json use a Split
    pre-tokenizer with their pattern: here on SmolLM2's vocabulary and merges.
    o200k splits letters by case (with marks and modifier letters in both
    classes, which the pattern's backtracking resolves): extra texts aim there."""
    with open(os.path.join(shared, "tokenizers", "smollm2", "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    src = tmp_path / "tokenizer.json"
    src.write_text(json.dumps(tj), encoding="utf-8")
    export(tmp_path / "tok.bin", "--tokenizer", src)
    ref = ref_bpe.TokenizerJson(src, pattern=pattern, split_digits=False)
    texts = byte_level_texts(shared)[::3] + [t.encode() for t in O200K_TEXTS]
    assert_same_as_reference(tmp_path, tmp_path / "tok.bin", ref, texts)


def test_special_tokens_never_come_from_text(llama3):
    ids = run("-m", "tokenize", "-z", llama3, "-i", "<|begin_of_text|><|eot_id|>").stdout.split()
    assert ids[0] == b"128000"  # the BOS the tokenizer adds
    assert all(int(i) < 128000 for i in ids[1:])


def test_llama3_adds_bos_and_smollm2_does_not(llama3, smollm2):
    assert run("-m", "tokenize", "-z", llama3, "-i", "Hello world").stdout == b"128000 9906 1917\n"
    assert run("-m", "tokenize", "-z", smollm2, "-i", "Hello world").stdout == b"19556 905\n"


def test_user_defined_tokens_are_matched_whole(shared, tmp_path):
    with open(os.path.join(shared, "tokenizers", "smollm2", "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["added_tokens"].append({"id": 49152, "content": "<tool_call>", "special": False})
    src = tmp_path / "tokenizer.json"
    src.write_text(json.dumps(tj), encoding="utf-8")
    export(tmp_path / "tok.bin", "--tokenizer", src)
    ids = run("-m", "tokenize", "-z", tmp_path / "tok.bin", "-i", "a<tool_call>b").stdout.split()
    assert b"49152" in ids and len(ids) == 3


def test_user_defined_tokens_swallow_whitespace_as_their_flags_say(shared, tmp_path):
    """An added token with rstrip (lstrip) takes the whitespace after (before)
    it when it is matched in text, as Hugging Face's AddedToken does."""
    with open(os.path.join(shared, "tokenizers", "smollm2", "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["added_tokens"] += [{"id": 49152, "content": "<R>", "special": False, "rstrip": True, "lstrip": False},
                           {"id": 49153, "content": "<L>", "special": False, "rstrip": False, "lstrip": True}]
    src = tmp_path / "tokenizer.json"
    src.write_text(json.dumps(tj), encoding="utf-8")
    export(tmp_path / "tok.bin", "--tokenizer", src)
    ref = ref_bpe.TokenizerJson(os.path.join(shared, "tokenizers", "smollm2", "tokenizer.json"))
    got = encode_all(tmp_path, tmp_path / "tok.bin", [b"a <R>  \n b", b"a \n <L> b"])
    assert got[0] == ref.encode(b"a ") + [49152] + ref.encode(b"b")
    assert got[1] == ref.encode(b"a") + [49153] + ref.encode(b" b")


def test_o200k_on_case_and_mark_heavy_random_text(shared, tmp_path):
    """o200k's overlapping letter classes and backtracking, on 5,000 random
    strings of upper, lower, title and modifier letters, combining marks,
    contractions (ſ included), digits, slashes and whitespace: run.c's
    pre-tokenizer and BPE against python3-regex with the pattern itself."""
    import random
    with open(os.path.join(shared, "tokenizers", "smollm2", "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": ref_bpe.O200K}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    src = tmp_path / "tokenizer.json"
    src.write_text(json.dumps(tj), encoding="utf-8")
    export(tmp_path / "tok.bin", "--tokenizer", src)
    ref = ref_bpe.TokenizerJson(src, pattern=ref_bpe.O200K, split_digits=False)
    rng = random.Random(5)
    chars = list("aAbBzZ '!/\n\r\t1239.,") + ["\u02b0", "\u0301", "\u01c5", "\u01c4", "\u01c6", "\u00e9", "E\u0301",
                                                "\u3042", "\u4e2d", "\u0660", "\u2160", "\u00a0", "s", "'S", "'ll",
                                                "\u017f"]
    texts = ["".join(rng.choice(chars) for _ in range(rng.randint(1, 25))).encode() for _ in range(5000)]
    assert_same_as_reference(tmp_path, tmp_path / "tok.bin", ref, texts)
