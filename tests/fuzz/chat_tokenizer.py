#!/usr/bin/env python3
"""Writes DIR/tokenizer.json (and its tokenizer_config.json): SmolLM2's
byte-level tokenizer with the special tokens of every chat template added
(some swallowing the whitespace after them, as Phi's do), so that the chat
fuzz target can render each template with it.

    python3 tests/fuzz/chat_tokenizer.py ../shared DIR"""

import json
import os
import sys

TOKENS = ["<think>", "</think>", "<start_of_turn>", "<end_of_turn>", "<|user|>", "<|assistant|>", "<|system|>",
          "<|end|>", "<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>", "<\uff5cUser\uff5c>",
          "<\uff5cAssistant\uff5c>"]

shared, out = sys.argv[1], sys.argv[2]
with open(os.path.join(shared, "tokenizers", "smollm2", "tokenizer.json"), encoding="utf-8") as f:
    tj = json.load(f)
first = max(a["id"] for a in tj["added_tokens"]) + 1
first = max(first, len(tj["model"]["vocab"]))
tj["added_tokens"] += [{"id": first + k, "content": t, "special": True, "rstrip": t.startswith("<|") and k % 2 == 0}
                       for k, t in enumerate(TOKENS)]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
    json.dump(tj, f)
with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
    json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}, f)
