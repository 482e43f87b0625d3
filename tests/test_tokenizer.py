"""The Llama 2 tokenizer (top-level tokenizer.bin) against llama.cpp's test
vectors and against SentencePiece itself."""

import json
import os
import random

import pytest

from conftest import ROOT, TOKENIZER, export, harness, run


def encode_all(tmp_path, tokenizer, texts):
    """run.c's encoding (no BOS) of each text (bytes)."""
    path = tmp_path / "texts.bin"
    path.write_bytes(b"\0".join(texts))
    lines = harness("encode", tokenizer, path).split("\n")[:-1]
    assert len(lines) == len(texts)
    return [[int(x) for x in line.split()] for line in lines]


def test_tokenizer_bin_is_exported_from_llama2_tokenizer_model(shared, tmp_path):
    fresh = tmp_path / "tokenizer.bin"
    export(fresh, "--tokenizer", os.path.join(shared, "tokenizers", "llama2", "tokenizer.model"))
    with open(TOKENIZER, "rb") as f:
        assert f.read() == fresh.read_bytes(), "tokenizer.bin is stale: run `make tokenizer`"


def assert_llama_cpp_cases(shared, tmp_path, tokenizer, vocab):
    """All 46 of llama.cpp's test cases for `vocab` ("spm" or "bpe") encode as expected."""
    with open(os.path.join(shared, "testdata", "tokenizer", f"ggml-vocab-llama-{vocab}.gguf.tests.json")) as f:
        cases = json.load(f)
    assert len(cases) == 46
    got = encode_all(tmp_path, tokenizer, [c["text"].encode() for c in cases])
    failures = [(c["text"], g, c["ids"]) for c, g in zip(cases, got) if g != c["ids"]]
    assert not failures, f"{len(failures)} of {len(cases)} cases differ: {failures[:3]}"


def test_llama_cpp_spm_vocab_cases(shared, tmp_path):
    assert_llama_cpp_cases(shared, tmp_path, TOKENIZER, "spm")


def varied_texts(shared, seed=0):
    """A few thousand lines: TinyStories, punctuation, digits, whitespace runs,
    accents, CJK, emoji, lone word markers, and invalid UTF-8."""
    rng = random.Random(seed)
    with open(os.path.join(shared, "text", "tinystories_valid_head.txt"), encoding="utf-8") as f:
        stories = [l for l in f.read().split("\n") if l.strip()][:1500]
    pieces = (list("abcXYZ 0123456789.,;:!?'\"()[]{}-_/\\@#$%^&*+=~`|<>\t\r   ")
              + list("éèêëàâäôöüçñßÆøåłżźćńśąęŁΩπ") + list("日本語中文字한국어ひらがなカタカナ")
              + ["😀", "👍🏽", "🇫🇷", "❤️", "𝕏", "\u2581", "\u00a0", "\u200b", "\ufffd", "  ", "\n\n", "1234"])
    texts = [s.encode() for s in stories]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))).encode() for _ in range(1500)]
    texts += [bytes(rng.randint(1, 255) for _ in range(rng.randint(1, 20))) for _ in range(400)]
    for _ in range(200):  # a stray invalid byte inside valid text
        t = rng.choice(stories).encode()
        k = rng.randint(0, len(t))
        texts.append(t[:k] + bytes([rng.choice([0x80, 0xBF, 0xC3, 0xE2, 0xED, 0xF0, 0xF8, 0xFF])]) + t[k:])
    return texts


def test_encoding_equals_sentencepiece_on_varied_text(shared, tmp_path):
    if os.environ.get("CI"):
        import sentencepiece as spm
    else:
        spm = pytest.importorskip("sentencepiece", reason="python3-sentencepiece is not installed")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(shared, "tokenizers", "llama2", "tokenizer.model"))
    texts = varied_texts(shared)
    assert len(texts) >= 3000
    got = encode_all(tmp_path, TOKENIZER, texts)
    failures = [(t, g, sp.encode(t)) for t, g in zip(texts, got) if g != sp.encode(t)]
    assert not failures, f"{len(failures)} of {len(texts)} texts differ, first: {failures[0]}"


def test_tokenize_mode_prints_bos_then_ids():
    p = run("-m", "tokenize", "-z", TOKENIZER, "-i", "Hello world")
    assert p.stdout == b"1 15043 3186\n"


def test_tokenize_mode_reads_prompt_file(tmp_path):
    (tmp_path / "p.txt").write_bytes(b"Hello world")
    assert run("-m", "tokenize", "-z", TOKENIZER, "-f", tmp_path / "p.txt").stdout == b"1 15043 3186\n"


def test_whole_file_prompt_encodes_in_one_piece(shared, tmp_path):
    """0.8 MB of text as one prompt (the merge loop uses a heap, not a quadratic rescan)."""
    path = os.path.join(shared, "text", "tinystories_valid_head.txt")
    p = run("-m", "tokenize", "-z", TOKENIZER, "-f", path)
    ids = p.stdout.split()
    assert ids[0] == b"1" and len(ids) > 150000


def assert_reference_cases(shared, tmp_path, name):
    """All 162 texts of ../shared's NAME.tests.json encode to the ids that
    @lenml/tokenizers (transformers.js) gives with the real tokenizer.json of
    ../shared/tokenizers/NAME. Returns the exported tokenizer."""
    tok = tmp_path / f"{name}.bin"
    export(tok, "--tokenizer", os.path.join(shared, "tokenizers", name, "tokenizer.json"))
    with open(os.path.join(shared, "testdata", "tokenizer", f"{name}.tests.json"), encoding="utf-8") as f:
        cases = json.load(f)
    assert len(cases) == 162
    got = encode_all(tmp_path, tok, [c["text"].encode() for c in cases])
    failures = [(c["text"], g, c["ids"]) for c, g in zip(cases, got) if g != c["ids"]]
    assert not failures, f"{len(failures)} of {len(cases)} cases differ: {failures[:3]}"
    return tok


def test_gemma3_tokenizer_json_equals_transformers_js(shared, tmp_path):
    """Gemma 3's SentencePiece BPE as tokenizer.json (262,144 pieces, byte
    fallback, no dummy prefix, a merge list whose order decides): every one of
    the 162 reference texts (whitespace runs, digits, accents, CJK, emoji)."""
    tok = assert_reference_cases(shared, tmp_path, "gemma3")
    assert run("-m", "tokenize", "-z", tok, "-i", "Hello").stdout == b"2 9259\n"  # <bos> first: add_bos_token


def test_qwen3_tokenizer_equals_transformers_js(shared, tmp_path):
    """Qwen3's byte-level BPE against all 162 reference texts, those whose
    accents come decomposed included: its tokenizer.json puts text in NFC
    first, and so does run.c, from tables export.py writes into the file."""
    assert_reference_cases(shared, tmp_path, "qwen3")


def test_nfc_equals_python_unicodedata(shared, tmp_path):
    """NFC on 5,000 random strings built to stress it: decomposed letters,
    several marks in every order (canonical reordering), Hangul jamo and
    syllables, composition exclusions, singletons, starters that compose,
    and invalid bytes (kept as they are). Encoded with Qwen3's tokenizer,
    they must give the ids of the same text normalized by Python first."""
    import random
    import unicodedata
    import ref_bpe
    tok = tmp_path / "qwen3.bin"
    path = os.path.join(shared, "tokenizers", "qwen3", "tokenizer.json")
    export(tok, "--tokenizer", path)
    ref = ref_bpe.TokenizerJson(path, pattern=ref_bpe.QWEN2, split_digits=False)
    pieces = ["a", "e", "o", "A", "E", "u", "n", " ", ".", "\u0301", "\u0300", "\u0308", "\u0323", "\u031b",
              "\u0327", "\u0345", "\u0313", "\u1100", "\u1161", "\u11a8", "\uac00", "\u0958", "\u212b", "\u2126",
              "\u0b47", "\u0b3e", "\u1f80", "\u03b1", "\u0915", "\u093c", "\u00e9", "\u1e69", "\u0112", "x"]
    rng = random.Random(3)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 14))) for _ in range(5000)]
    raw = [t.encode() for t in texts] + [b"e\xcc\x81\xff\xcc\x81a", b"\xcc\x81\xcc"]
    got = encode_all(tmp_path, tok, raw)
    want = [ref.encode(unicodedata.normalize("NFC", t).encode()) for t in texts]
    failures = [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]
    assert not failures, f"{len(failures)} of {len(texts)} differ, first: {failures[0]}"
    assert got[-2] == ref.encode("\u00e9".encode()) + ref.encode(b"\xff\xcc\x81a")  # composed, then kept


@pytest.mark.parametrize("normalizer,pre,dummy", [
    ({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                          {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
     None, True),
    (None, {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}, True),
    (None, {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": False}, False),
])
def test_sentencepiece_json_spellings_of_the_dummy_prefix(shared, tmp_path, normalizer, pre, dummy):
    """The other ways a tokenizer.json writes SentencePiece's normalization
    (Llama 2 style: Prepend + Replace, or a Metaspace pre-tokenizer): with a
    dummy prefix, "Hello" is encoded as "▁Hello"; without, as "Hello"."""
    with open(os.path.join(shared, "tokenizers", "gemma3", "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["normalizer"], tj["pre_tokenizer"] = normalizer, pre
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    export(tmp_path / "tok.bin", "--tokenizer", tmp_path / "tokenizer.json")
    ids = encode_all(tmp_path, tmp_path / "tok.bin", [b"Hello world"])[0]
    assert ids == ([26352, 1902] if dummy else [9259, 1902])


def test_sentencepiece_json_with_an_unknown_normalizer_is_refused(shared, tmp_path):
    with open(os.path.join(shared, "tokenizers", "gemma3", "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["normalizer"] = {"type": "NFKC"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    p = export(tmp_path / "tok.bin", "--tokenizer", tmp_path / "tokenizer.json", check=False)
    assert p.returncode == 1 and "not a form run.c implements" in p.stderr
