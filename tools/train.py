#!/usr/bin/env python3
"""Train the small default model that ships in models/.

    /usr/bin/python3 tools/train.py                 # train, evaluate, export
    /usr/bin/python3 tools/train.py --steps 50      # a quick trial run

Steps: split ../shared/text's TinyStories into stories and hold out the last
10% of the validation file; train a SentencePiece BPE tokenizer on the
training stories; train a small Llama (grouped-query attention, SwiGLU,
RoPE, RMSNorm, tied embeddings) with PyTorch; evaluate it on the held-out
stories; write a Hugging Face style checkpoint (config.json and
model.safetensors) and convert it and the tokenizer with export.py into
models/. Everything is seeded.

Needs Debian's python3-torch, python3-sentencepiece and python3-numpy (and,
for speed, libopenblas0: Debian's torch otherwise uses the reference BLAS).
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The model. Sizes chosen to train in well under an hour on 2 cores.
CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 5,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


# ---------------------------------------------------------------------------
# Data

def read_stories(path):
    """Stories of a TinyStories text file. Paragraphs of a story are separated
    by a blank line; a new story starts on a line right after a non-blank one
    (the training file) or, where boundaries are not marked (the validation
    file), at a paragraph that begins "Once upon a time". A story's paragraphs
    are joined with one newline."""
    stories, paragraphs, prev_blank = [], [], True
    with open(path, encoding="utf-8") as f:
        for line in f.read().split("\n"):
            line = line.strip()
            if not line:
                prev_blank = True
                continue
            if paragraphs and (not prev_blank or line.startswith("Once upon a time")):
                stories.append("\n".join(paragraphs))
                paragraphs = []
            paragraphs.append(line)
            prev_blank = False
    if paragraphs:
        stories.append("\n".join(paragraphs))
    return stories


def split_stories(data_dir):
    """(train, held_out): the training-split file and the first 90% of the
    validation-split file for training, the last 10% held out."""
    train = read_stories(os.path.join(data_dir, "tinystories_train_head.txt"))
    valid = read_stories(os.path.join(data_dir, "tinystories_valid_head.txt"))
    cut = len(valid) * 9 // 10
    return train + valid[:cut], valid[cut:]


def train_tokenizer(stories, vocab_size, out_prefix):
    import sentencepiece as spm
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(stories))
        text_path = f.name
    spm.SentencePieceTrainer.train(
        input=text_path, model_prefix=out_prefix, model_type="bpe", vocab_size=vocab_size,
        character_coverage=1.0, byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        max_sentence_length=100000, num_threads=2, minloglevel=2)
    os.unlink(text_path)
    return spm.SentencePieceProcessor(model_file=out_prefix + ".model")


def encode_stories(sp, stories):
    """One stream: BOS, story, BOS, story, ... (BOS separates stories, as in
    llama2.c's TinyStories models)."""
    out = []
    for s in stories:
        out.append(1)
        out.extend(sp.encode(s))
    return np.array(out, dtype=np.int64)


# ---------------------------------------------------------------------------
# Model (PyTorch, Hugging Face parameter names and rotate-half RoPE)

def build_model(config):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    d, nh = config["hidden_size"], config["num_attention_heads"]
    nkv, hd = config["num_key_value_heads"], config["hidden_size"] // config["num_attention_heads"]

    class RMSNorm(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + config["rms_norm_eps"]) * self.weight

    def rotate_half(x):
        return torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], dim=-1)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(d, nh * hd, bias=False)
            self.k_proj = nn.Linear(d, nkv * hd, bias=False)
            self.v_proj = nn.Linear(d, nkv * hd, bias=False)
            self.o_proj = nn.Linear(nh * hd, d, bias=False)

        def forward(self, x, cos, sin, mask):
            B, T, _ = x.shape
            q = self.q_proj(x).view(B, T, nh, hd).transpose(1, 2)
            k = self.k_proj(x).view(B, T, nkv, hd).transpose(1, 2)
            v = self.v_proj(x).view(B, T, nkv, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hd) + mask[:T, :T]
            out = F.softmax(att, dim=-1) @ v
            return self.o_proj(out.transpose(1, 2).reshape(B, T, nh * hd))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            h = config["intermediate_size"]
            self.gate_proj = nn.Linear(d, h, bias=False)
            self.up_proj = nn.Linear(d, h, bias=False)
            self.down_proj = nn.Linear(h, d, bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm = RMSNorm(d)
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm(d)
            self.mlp = MLP()

        def forward(self, x, cos, sin, mask):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(config["vocab_size"], d)
            self.layers = nn.ModuleList([Layer() for _ in range(config["num_hidden_layers"])])
            self.norm = RMSNorm(d)

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Body()
            T = config["max_position_embeddings"]
            inv_freq = 1.0 / config["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd)
            freqs = torch.outer(torch.arange(T).float(), inv_freq)
            emb = torch.cat([freqs, freqs], dim=-1)
            self.register_buffer("cos", emb.cos(), persistent=False)
            self.register_buffer("sin", emb.sin(), persistent=False)
            self.register_buffer("mask", torch.triu(torch.full((T, T), float("-inf")), 1), persistent=False)
            for name, p in self.named_parameters():
                if p.dim() == 2:  # GPT-2 style init, residual projections scaled down
                    std = 0.02 / math.sqrt(2 * config["num_hidden_layers"]) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, tokens):
            T = tokens.shape[1]
            x = self.model.embed_tokens(tokens)
            cos, sin = self.cos[:T], self.sin[:T]
            for layer in self.model.layers:
                x = layer(x, cos, sin, self.mask)
            x = self.model.norm(x)
            return x @ self.model.embed_tokens.weight.T  # tied classifier

    return Llama()


# ---------------------------------------------------------------------------
# Training and evaluation

def story_nll(model, tokens):
    """Mean negative log-likelihood (nats) of each token after the first,
    given all before it: what run.c's -m perplexity prints as nll."""
    import torch
    import torch.nn.functional as F
    with torch.no_grad():
        t = torch.tensor(tokens, dtype=torch.long)[None]
        logits = model(t[:, :-1])
        return F.cross_entropy(logits[0], t[0, 1:]).item()


def evaluate_stream(model, data, seq_len, batch=16):
    """Mean loss over consecutive windows of the held-out token stream."""
    import torch
    import torch.nn.functional as F
    n = (len(data) - 1) // seq_len
    x = torch.tensor(data[:n * seq_len].reshape(n, seq_len))
    y = torch.tensor(data[1:n * seq_len + 1].reshape(n, seq_len))
    total = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, n, batch):
            logits = model(x[i:i + batch])
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i:i + batch].reshape(-1),
                                     reduction="sum").item()
    model.train()
    return total / (n * seq_len)


def train(model, data, val, args):
    import torch
    import torch.nn.functional as F
    rng = np.random.default_rng(args.seed)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    T = CONFIG["max_position_embeddings"]
    best, best_state, history = float("inf"), None, []
    start = time.time()
    for step in range(1, args.steps + 1):
        # learning rate: linear warm-up, then cosine decay to a tenth
        warm = min(1.0, step / args.warmup)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(0, len(data) - T - 1, args.batch)
        x = torch.tensor(np.stack([data[i:i + T] for i in idx]))
        y = torch.tensor(np.stack([data[i + 1:i + T + 1] for i in idx]))
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            val_loss = evaluate_stream(model, val, T)
            history.append({"step": step, "train_loss": round(loss.item(), 4), "val_loss": round(val_loss, 4)})
            if val_loss < best:
                best = val_loss
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elapsed = time.time() - start
            print(f"step {step}/{args.steps}  train {loss.item():.4f}  val {val_loss:.4f}  lr {lr:.2e}  "
                  f"{elapsed / 60:.1f} min", file=sys.stderr, flush=True)
    model.load_state_dict(best_state)
    return best, history, time.time() - start


# ---------------------------------------------------------------------------
# Writing the checkpoint

def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


def export(model, hf_dir, sp_prefix, out_dir, name):
    os.makedirs(hf_dir, exist_ok=True)
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", **CONFIG},
                  f, indent=2)
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(hf_dir, "model.safetensors"), tensors)
    exporter = os.path.join(ROOT, "export.py")
    subprocess.run([sys.executable, exporter, os.path.join(out_dir, name + ".bin"), "--hf", hf_dir], check=True)
    subprocess.run([sys.executable, exporter, os.path.join(out_dir, "tokenizer.bin"),
                    "--tokenizer", sp_prefix + ".model"], check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(ROOT), "shared", "text"))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "models"))
    ap.add_argument("--name", default="tinystories")
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-eval-stories", type=int, default=24,
                    help="held-out stories whose nll is recorded for the engine's test")
    args = ap.parse_args()

    import torch
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)

    train_stories, held_out = split_stories(args.data_dir)
    print(f"{len(train_stories)} training stories, {len(held_out)} held out", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="train-")
    sp_prefix = os.path.join(work, "tokenizer")
    sp = train_tokenizer(train_stories, CONFIG["vocab_size"], sp_prefix)
    data, val = encode_stories(sp, train_stories), encode_stories(sp, held_out)
    print(f"{len(data)} training tokens, {len(val)} held-out tokens", file=sys.stderr)

    model = build_model(CONFIG)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params} parameters", file=sys.stderr)
    val_loss, history, seconds = train(model, data, val, args)
    model.eval()

    # per-story nll on held-out stories that fit in the context, for tests/test_default_model.py
    evals = []
    for i, story in enumerate(held_out):
        tokens = [1] + sp.encode(story)
        if len(tokens) <= CONFIG["max_position_embeddings"]:
            evals.append({"story": i, "tokens": len(tokens), "nll": round(story_nll(model, tokens), 6)})
        if len(evals) == args.n_eval_stories:
            break

    export(model, os.path.join(work, "hf"), sp_prefix, args.out_dir, args.name)
    card = {"config": CONFIG, "parameters": n_params, "seed": args.seed, "steps": args.steps,
            "batch": args.batch, "lr": args.lr, "training_tokens": int(len(data)),
            "held_out_tokens": int(len(val)), "training_minutes": round(seconds / 60, 1),
            "val_loss": round(val_loss, 4), "val_perplexity": round(math.exp(val_loss), 3),
            "history": history, "held_out_story_nll": evals}
    with open(os.path.join(args.out_dir, args.name + ".json"), "w") as f:
        json.dump(card, f, indent=1)
    print(f"val loss {val_loss:.4f}, perplexity {math.exp(val_loss):.3f}, {seconds / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
