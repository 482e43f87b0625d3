"""A reference byte-level BPE tokenizer for the tests, written separately from
run.c: pre-tokenization with Python's `regex` module and the families' own
patterns, then BPE the slow, obvious way (find the best adjacent pair, merge
it, repeat). Text is bytes; bytes that are not UTF-8 go through the regex as
lone surrogates (surrogateescape), which belong to no class, as in run.c."""

import base64
import json

import regex

LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
O200K = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def pieces(text, pattern, split_digits=False):
    s = text.decode("utf-8", errors="surrogateescape")
    chunks = regex.findall(r"\p{N}|[^\p{N}]+", s) if split_digits else [s]
    out = []
    for chunk in chunks:
        if split_digits and regex.fullmatch(r"\p{N}", chunk):
            out.append(chunk)
        else:
            out.extend(regex.findall(pattern, chunk))
    return [p.encode("utf-8", errors="surrogateescape") for p in out]


class Tiktoken:
    """Llama 3's tokenizer.model: merge the adjacent pair whose concatenation
    has the lowest rank; a piece that is a token is taken whole."""

    def __init__(self, path):
        self.ranks = {}
        with open(path, "rb") as f:
            for line in f:
                tok, rank = line.split()
                self.ranks[base64.b64decode(tok)] = int(rank)

    def encode(self, text):
        ids = []
        for piece in pieces(text, LLAMA3):
            if piece in self.ranks:
                ids.append(self.ranks[piece])
                continue
            parts = [bytes([b]) for b in piece]
            while len(parts) > 1:
                best = min(range(len(parts) - 1), key=lambda i: (self.ranks.get(parts[i] + parts[i + 1], 1 << 60), i))
                if parts[best] + parts[best + 1] not in self.ranks:
                    break
                parts[best:best + 2] = [parts[best] + parts[best + 1]]
            ids.extend(self.ranks[p] for p in parts)
        return ids


class TokenizerJson:
    """A Hugging Face tokenizer.json BPE: merges by rank on the byte-mapped
    strings; characters missing from the vocabulary are dropped."""

    def __init__(self, path, pattern=None, split_digits=None):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        self.vocab = tj["model"]["vocab"]
        self.ranks = {}
        for i, m in enumerate(tj["model"]["merges"]):
            pair = tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
            self.ranks.setdefault(pair, i)
        self.ignore_merges = tj["model"].get("ignore_merges", False)
        pre = tj["pre_tokenizer"]
        kinds = [p["type"] for p in pre.get("pretokenizers", [pre])]
        self.split_digits = "Digits" in kinds if split_digits is None else split_digits
        self.pattern = pattern or GPT2
        self.byte_char = bytes_to_unicode()

    def encode(self, text):
        ids = []
        for piece in pieces(text, self.pattern, self.split_digits):
            word = "".join(self.byte_char[b] for b in piece)
            if self.ignore_merges and word in self.vocab:
                ids.append(self.vocab[word])
                continue
            parts = [c for c in word if c in self.vocab]
            while len(parts) > 1:
                best = min(range(len(parts) - 1), key=lambda i: (self.ranks.get((parts[i], parts[i + 1]), 1 << 60), i))
                if (parts[best], parts[best + 1]) not in self.ranks:
                    break
                parts[best:best + 2] = [parts[best] + parts[best + 1]]
            ids.extend(self.vocab[p] for p in parts)
        return ids
