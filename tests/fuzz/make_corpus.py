#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/ (run
once; the seeds are committed): small valid models in each format and weight
type, small tokenizers of both kinds, prompts and conversations."""

import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
import export  # noqa: E402


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tiny_model(path, dtype, tied, bias, hidden=40, **extra):
    cfg = {"dim": 32, "hidden_dim": hidden, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "head_dim": 16,
           "vocab_size": 24, "seq_len": 16, "rope_theta": 10000.0, "norm_eps": 1e-5, "tied": tied,
           "qkv_bias": bias, "bos_id": 1, "eos_ids": [2], "dtype": dtype,
           "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_seq_len": 8},
           **extra}
    rng = np.random.default_rng(0)
    export.write_model(path, cfg, lambda name: rng.normal(size=dict(export.tensor_order(cfg))[name]).astype(np.float32))


def main():
    os.makedirs(os.path.join(HERE, "corpus"), exist_ok=True)
    tmp = os.path.join(HERE, "corpus", "tmp.bin")
    for dtype, tied, bias in [("fp32", True, False), ("q8_0", False, True), ("q4_0", True, False)]:
        tiny_model(tmp, dtype, tied, bias)
        out("model", f"tiny-{dtype}.bin", open(tmp, "rb").read())
    # version 2 files that mix types: w2 (rows of 256) in a K type, the rest in its fallback
    for dtype in ("q4_k", "q6_k"):
        tiny_model(tmp, dtype, False, False, hidden=256)
        out("model", f"tiny-{dtype}.bin", open(tmp, "rb").read())
    # Gemma-shaped: post-norms, q/k norms, GELU, soft-caps, a local and a global layer, linear RoPE scaling
    tiny_model(tmp, "q8_0", True, False, n_layers=2, rope_scaling=None, post_norms=True, qk_norm=True,
               activation="gelu_tanh", attn_softcap=50.0, final_softcap=30.0, sliding_window=3, sliding_layers=[0],
               rope_local_theta=10000.0, rope_linear_factor=8.0, embedding_scale=5.6, attention_scale=0.25)
    out("model", "tiny-gemma.bin", open(tmp, "rb").read())
    os.remove(tmp)
    # llama2.c legacy: 7 int32, then fp32 tensors (dim 8, hidden 12, 1 layer, 2 heads, vocab 6 shared, seq 4)
    dim, hidden, vocab, seq = 8, 12, 6, 4
    n = vocab * dim + dim + 4 * dim * dim + dim + 3 * dim * hidden + dim + seq * (dim // 2)
    out("model", "legacy.bin", struct.pack("<7i", dim, hidden, 1, 2, 2, vocab, seq) + np.ones(n, "<f4").tobytes())

    # SentencePiece kind: bytes, a few pieces
    pieces = [(b"<unk>", 0.0, 2), (b"<s>", 0.0, 3), (b"</s>", 0.0, 3)]
    pieces += [(f"<0x{b:02X}>".encode(), 0.0, 6) for b in range(256)]
    pieces += [(p.encode(), -float(i), 1) for i, p in enumerate([" ", "a", "b", " a", "ab", " ab", "\u00e9"])]
    export.write_tokenizer(tmp, pieces, export.KIND_SENTENCEPIECE, 1, 2, 0, 3)
    out("tokenizer", "spm.bin", open(tmp, "rb").read())
    # SentencePiece kind with a merge list (Gemma 3's tokenizer.json), a chat template
    export.write_tokenizer(tmp, pieces + [(b"<start_of_turn>", 0.0, 3), (b"<end_of_turn>", 0.0, 3)],
                           export.KIND_SENTENCEPIECE, 1, 2, 0, 2, merges=[(259, 260), (259, 263)], chat=(8, None))
    out("tokenizer", "spm-merges.bin", open(tmp, "rb").read())
    # byte-level kind with merges, a user-defined and a control token, a chat template
    tokens = [(bytes([b]), 0.0, 1) for b in range(256)] + [(b"ab", 0.0, 1), (b"abc", 0.0, 1), (b" a", 0.0, 1)]
    tokens += [(b"<|im_start|>", 0.0, 3), (b"<|im_end|>", 0.0, 3), (b"<tool>", 0.0, 4)]
    merges = [(97, 98), (256, 99), (32, 97)]
    for pretok in (1, 2, 3, 4):
        export.write_tokenizer(tmp, tokens, export.KIND_BYTE_LEVEL, -1, 260, -1, 8, pretok, merges,
                               chat=(4, "You are helpful."))
        out("tokenizer", f"bpe-{pretok}.bin", open(tmp, "rb").read())
    # byte-level with NFC's tables (Qwen's tokenizers)
    export.write_tokenizer(tmp, tokens, export.KIND_BYTE_LEVEL, -1, 260, -1, export.TOKF_NFC, 2, merges)
    out("tokenizer", "bpe-nfc.bin", open(tmp, "rb").read())
    os.remove(tmp)

    for i, text in enumerate(["Hello world", "  leading and trailing  ", "I'M don't 12345 \u00e9\u00e8 \u65e5\u672c",
                              "\U0001F44B\U0001F3FD\n\n\t\r\n", "\xff\xfe invalid", "<s></s><|im_end|>"]):
        out("encode", f"text{i}", text.encode("utf-8", errors="surrogateescape") if i != 4 else b"\xff\xfe invalid")
    out("chat", "conversation", b"SYou are a pirate.\0Hello!\0Tell me a joke.")
    out("chat", "no-system", b"Hi there\0\0  \0")


if __name__ == "__main__":
    main()
