#!/usr/bin/env python3
"""What quantization costs, measured on real models: held-out perplexity in
fp32, q8_0 and q4_0, and how often the quantized model's most likely next
token (greedy top-1) agrees with fp32's.

    /usr/bin/python3 tools/quality.py          # prints a Markdown table

Models: stories260K (../shared, evaluated on TinyStories validation text) and
the default model in models/ (on the stories tools/train.py held out). Each
story up to the model's context is one sequence; perplexity is exp of the
token-weighted mean negative log-likelihood.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import train  # noqa: E402  (its story splitting)


def tokenize(tokenizer, text):
    out = subprocess.run([os.path.join(ROOT, "run"), "-m", "tokenize", "-z", tokenizer, "-i", text],
                         capture_output=True, text=True, check=True).stdout
    return [int(t) for t in out.split()]


def logits(model, tokens):
    out = subprocess.run([os.path.join(ROOT, "tests", "harness"), "logits", model, "64", *map(str, tokens)],
                         capture_output=True, text=True, check=True).stdout
    return np.array([[float(v) for v in line.split()] for line in out.strip().split("\n")])


def evaluate(models, tokenizer, stories, ctx, n_stories=40):
    """{name: (nll sum, token count, top-1 agreements with the first model)}"""
    results = {name: [0.0, 0, 0] for name in models}
    used = 0
    for story in stories:
        tokens = tokenize(tokenizer, story)
        if len(tokens) > ctx or len(tokens) < 2:
            continue
        reference_top = None
        for name, path in models.items():
            lg = logits(path, tokens)[:-1].astype(np.float64)
            m = lg.max(axis=1)
            nll = m + np.log(np.exp(lg - m[:, None]).sum(axis=1)) - lg[np.arange(len(tokens) - 1), tokens[1:]]
            top = lg.argmax(axis=1)
            if reference_top is None:
                reference_top = top
            results[name][0] += nll.sum()
            results[name][1] += len(nll)
            results[name][2] += int((top == reference_top).sum())
        used += 1
        if used == n_stories:
            break
    return results


def main():
    tmp = tempfile.mkdtemp()
    rows = []
    setups = []
    if os.path.isdir(SHARED):
        setups.append(("stories260K", ["--llama2c", os.path.join(SHARED, "models", "stories260K.bin")],
                       os.path.join(SHARED, "models", "tok512.bin"), 512,
                       train.read_stories(os.path.join(SHARED, "text", "tinystories_valid_head.txt"))))
        setups.append(("default (models/tinystories.bin)", ["--runc", os.path.join(ROOT, "models", "tinystories.bin")],
                       os.path.join(ROOT, "models", "tokenizer.bin"), 256,
                       train.split_stories(os.path.join(SHARED, "text"))[1]))
    for label, source, tokenizer, ctx, stories in setups:
        models = {}
        for dtype in ("fp32", "q8_0", "q4_0"):
            path = os.path.join(tmp, f"{len(rows)}-{dtype}.bin")
            subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), path, *source, "--dtype", dtype],
                           check=True, capture_output=True)
            models[dtype] = path
        res = evaluate(models, tokenizer, stories, ctx)
        for dtype, (nll, n, agree) in res.items():
            rows.append((label, dtype, os.path.getsize(models[dtype]), np.exp(nll / n), 100 * agree / n, n))
    print("| model | weights | file size | held-out perplexity | top-1 agreement with fp32 | tokens |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, dtype, size, ppl, agree, n in rows:
        print(f"| {label} | {dtype} | {size / 1e6:.2f} MB | {ppl:.3f} | {agree:.1f}% | {n} |")


if __name__ == "__main__":
    main()
