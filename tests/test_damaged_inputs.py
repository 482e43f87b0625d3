"""export.py's readers on damaged files: thousands of truncations and byte
flips of real safetensors, GGUF, SentencePiece protobuf, tiktoken,
tokenizer.json and torch pickle files. Each must be read or refused with an
ExportError (a clear one-line message), never crash with another exception,
hang or run wild."""

import json
import os
import random
import sys

import numpy as np
import pytest

import gguf_writer as gw
import hf
from conftest import ROOT

sys.path.insert(0, ROOT)
import export  # noqa: E402

CONFIG = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,
          "num_key_value_heads": 1, "vocab_size": 64, "tie_word_embeddings": False}


def mutations(data, n, seed):
    """Truncations at every kind of place, and random byte changes."""
    rng = random.Random(seed)
    for _ in range(n):
        kind = rng.random()
        if kind < 0.3:
            yield data[:rng.randrange(len(data))]
        elif kind < 0.9:
            d = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(d))
                d[i] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
            yield bytes(d)
        else:  # a huge length field somewhere near the start
            d = bytearray(data)
            i = rng.randrange(min(len(d) - 8, 256))
            d[i:i + 8] = rng.choice([b"\xff" * 8, (2 ** 62).to_bytes(8, "little"), (2 ** 31).to_bytes(8, "little")])
            yield bytes(d)


def survives(read, path, data):
    with open(path, "wb") as f:
        f.write(data)
    try:
        read(path)
    except export.ExportError:
        pass


def test_damaged_safetensors(tmp_path):
    hf.write_checkpoint(tmp_path / "hf", CONFIG, hf.random_llama(CONFIG, 0))
    good = (tmp_path / "hf" / "model.safetensors").read_bytes()

    def read(path):
        st = export.SafetensorsFile(str(path))
        for name in st.tensors:
            st.get(name)
    for data in mutations(good, 600, 1):
        survives(read, tmp_path / "x.safetensors", data)


def test_damaged_gguf(tmp_path):
    gw.llama_gguf(tmp_path / "m.gguf", CONFIG, hf.random_llama(CONFIG, 0), ttype=gw.Q8_0,
                  tokenizer={"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": [chr(65 + i) for i in range(64)],
                             "tokenizer.ggml.merges": ["A B"], "tokenizer.ggml.pre": "llama-bpe"})
    good = (tmp_path / "m.gguf").read_bytes()

    def read(path):
        ck = export.GGUFCheckpoint(str(path))
        for name, _ in export.tensor_order(ck.config)[:6]:
            ck.get(name)
        export.export_gguf_tokenizer(ck.gguf, str(tmp_path / "tok.bin"), None)
    for data in mutations(good, 600, 2):
        survives(read, tmp_path / "x.gguf", data)


def test_damaged_sentencepiece_protobuf(shared, tmp_path):
    good = open(os.path.join(shared, "models", "tok512.model"), "rb").read()
    for data in mutations(good, 1000, 3):
        survives(lambda p: export.export_sentencepiece(str(p), str(tmp_path / "t.bin")), tmp_path / "x.model", data)


def test_damaged_tiktoken_and_tokenizer_json(tmp_path):
    import base64
    tik = b"".join(base64.b64encode(bytes([i])) + b" %d\n" % i for i in range(256))
    for data in mutations(tik, 300, 4):
        survives(lambda p: export.export_tokenizer(str(p), str(tmp_path / "t.bin")), tmp_path / "x.model", data)
    tj = json.dumps({"model": {"type": "BPE", "vocab": {chr(0x21 + i): i for i in range(90)}, "merges": ["! \""]},
                     "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
                     "added_tokens": [{"id": 90, "content": "<s>", "special": True}]}).encode()
    for data in mutations(tj, 400, 5):
        survives(lambda p: export.export_tokenizer(str(p), str(tmp_path / "t.bin")), tmp_path / "tokenizer.json", data)


def test_damaged_torch_pickle(tmp_path):
    torch = pytest.importorskip("torch") if not os.environ.get("CI") else __import__("torch")
    torch.save({"tok_embeddings.weight": torch.zeros(8, 4, dtype=torch.bfloat16),
                "layers.0.attention.wq.weight": torch.ones(4, 4)}, tmp_path / "c.pth")
    good = (tmp_path / "c.pth").read_bytes()

    def read(path):
        for t in export.read_torch_checkpoint(str(path)).values():
            t.numpy()
    for data in mutations(good, 600, 6):
        survives(read, tmp_path / "x.pth", data)
