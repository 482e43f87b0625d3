"""The real trained model stories260K (../shared): golden output, conversion
to this project's format, and sampling identical to llama2.c's."""

import os
import struct

import numpy as np
import pytest

import reference
from conftest import export, harness, run


@pytest.fixture(scope="module")
def stories(shared):
    m = os.path.join(shared, "models")
    with open(os.path.join(shared, "testdata", "stories260K_t0_n200.expected"), "rb") as f:
        expected = f.read()
    return {"model": os.path.join(m, "stories260K.bin"), "tok": os.path.join(m, "tok512.bin"),
            "spm": os.path.join(m, "tok512.model"), "expected": expected}


def test_legacy_model_greedy_output_equals_llama2c_golden_output(stories):
    out = run(stories["model"], "-z", stories["tok"], "-t", "0", "-n", "200").stdout
    assert out == stories["expected"]


@pytest.mark.parametrize("threads", [2, 3])
def test_output_is_the_same_on_any_number_of_threads(stories, threads):
    """The threads share each step of forward and wait for each other between
    steps (team_wait): the golden story from BOS, and a prompt's chunk and its
    continuation, come out as on one thread, also with more threads than the
    machine's 2 cores (the portable build runs them on one thread)."""
    def greedy(n_threads, *args):
        return run(stories["model"], "-z", stories["tok"], "-t", "0", "-T", n_threads, *args).stdout

    assert greedy(threads, "-n", "200") == stories["expected"]
    prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park"
    one = greedy(1, "-n", "120", "-i", prompt)
    assert one.startswith(prompt.encode()) and len(one) > len(prompt) + 100
    assert greedy(threads, "-n", "120", "-i", prompt) == one


def huge_pages_available():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def test_model_read_into_huge_pages_runs_as_mapped(stories, tmp_path):
    """--no-mmap reads the file into 2 MB pages, --mmap maps it; the default
    maps a file this small (1 MB). All three print the golden output and the
    same probabilities, and --verbose says which way the bytes came in. The
    converted file (this project's format, aligned tensors) too."""
    converted = tmp_path / "stories260K.bin"
    export(converted, "--llama2c", stories["model"])
    for model in (stories["model"], str(converted)):
        outputs = []
        for how in ([], ["--mmap"], ["--no-mmap"]):
            p = run(model, "-z", stories["tok"], "-t", "0", "-n", "200", "--probs", "3", "--verbose", *how)
            assert p.stdout == stories["expected"]
            err = p.stderr.decode()
            read_in = how == ["--no-mmap"] and huge_pages_available()
            assert ("MB read into 2 MB pages (the file)" if read_in else "MB mapped (the file)") in err
            outputs.append([line for line in err[err.index("[pos"):].splitlines() if "tok/s" not in line])
        assert outputs[0] == outputs[1] == outputs[2]


def test_model_converted_to_own_format_prints_the_same(stories, tmp_path):
    converted = tmp_path / "stories260K.bin"
    export(converted, "--llama2c", stories["model"])
    with open(converted, "rb") as f:
        assert f.read(4) == b"RUNC"
    out = run(converted, "-z", stories["tok"], "-t", "0", "-n", "200").stdout
    assert out == stories["expected"]


def test_converted_sentencepiece_tokenizer_encodes_like_tok512_bin(stories, tmp_path, shared):
    tok = tmp_path / "tok512.bin"
    export(tok, "--tokenizer", stories["spm"])
    text = open(os.path.join(shared, "text", "tinystories_valid_head.txt"), encoding="utf-8").read()
    # tok512.model removes extra whitespace (SentencePiece's remove_extra_whitespaces),
    # which llama2.c's tokenizer.bin cannot say: compare on text without it.
    lines = [" ".join(l.split()) for l in text.split("\n") if l.strip()][:300]
    lines += ["Héllo wörld!\t42 日本 😀", "\x01\x7f", "a"]
    (tmp_path / "in.bin").write_bytes(b"\0".join(l.encode() for l in lines))
    a = harness("encode", stories["tok"], tmp_path / "in.bin")
    b = harness("encode", tok, tmp_path / "in.bin")
    assert a.count("\n") == len(lines)
    assert a == b
    # and the same model output through the converted tokenizer
    out = run(stories["model"], "-z", tok, "-t", "0", "-n", "200").stdout
    assert out == stories["expected"]


def test_converted_tok512_keeps_sentencepiece_whitespace_rule(stories, tmp_path):
    tok = tmp_path / "tok512.bin"
    export(tok, "--tokenizer", stories["spm"])
    # leading, trailing and repeated spaces are dropped, as SentencePiece does with this model
    assert run("-m", "tokenize", "-z", tok, "-i", "  Once   upon  ").stdout == \
        run("-m", "tokenize", "-z", tok, "-i", "Once upon").stdout
    assert run("-m", "tokenize", "-z", tok, "-i", "   ").stdout == b"1\n"


# --- sampling: the same random numbers and top-p procedure as llama2.c ---

def legacy_to_hf(path):
    """stories260K's weights under Hugging Face names and layout, for the reference."""
    with open(path, "rb") as f:
        dim, hidden, L, nh, nkv, vocab, seq = struct.unpack("<7i", f.read(28))
        data = np.frombuffer(f.read(), dtype="<f4")
    hd, kv = dim // nh, nkv * dim // nh
    shapes = [("emb", (vocab, dim)), ("att_norm", (L, dim)), ("wq", (L, dim, dim)), ("wk", (L, kv, dim)),
              ("wv", (L, kv, dim)), ("wo", (L, dim, dim)), ("ffn_norm", (L, dim)), ("w1", (L, hidden, dim)),
              ("w2", (L, dim, hidden)), ("w3", (L, hidden, dim)), ("norm", (dim,))]
    t, off = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        t[name] = data[off:off + n].reshape(shape)
        off += n

    def to_hf_rope(w, heads):  # Meta's interleaved pairs -> HF rotate-half
        return w.reshape(heads, hd // 2, 2, dim).transpose(0, 2, 1, 3).reshape(heads * hd, dim)

    w = {"model.embed_tokens.weight": t["emb"], "model.norm.weight": t["norm"]}
    for i in range(L):
        p = f"model.layers.{i}."
        w.update({p + "input_layernorm.weight": t["att_norm"][i], p + "post_attention_layernorm.weight": t["ffn_norm"][i],
                  p + "self_attn.q_proj.weight": to_hf_rope(t["wq"][i], nh),
                  p + "self_attn.k_proj.weight": to_hf_rope(t["wk"][i], nkv),
                  p + "self_attn.v_proj.weight": t["wv"][i], p + "self_attn.o_proj.weight": t["wo"][i],
                  p + "mlp.gate_proj.weight": t["w1"][i], p + "mlp.down_proj.weight": t["w2"][i],
                  p + "mlp.up_proj.weight": t["w3"][i]})
    config = {"hidden_size": dim, "intermediate_size": hidden, "num_hidden_layers": L, "num_attention_heads": nh,
              "num_key_value_heads": nkv, "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": True}
    return config, w


class Llama2cSampler:
    """llama2.c's sampler, written out again from its description: xorshift64*
    random numbers, temperature, then multinomial or top-p sampling."""

    def __init__(self, seed, temperature, topp):
        self.state, self.temperature, self.topp = seed, temperature, topp

    def random_f32(self):
        m = (1 << 64) - 1
        s = self.state
        s ^= s >> 12
        s ^= (s << 25) & m
        s ^= s >> 27
        self.state = s
        u32 = ((s * 0x2545F4914F6CDD1D) & m) >> 32
        return np.float32(u32 >> 8) / np.float32(16777216.0)

    def sample(self, logits):
        x = logits.astype(np.float32) / np.float32(self.temperature)
        e = np.exp(x - x.max())
        probs = (e / e.sum()).astype(np.float32)
        coin = self.random_f32()
        if self.topp <= 0 or self.topp >= 1:
            cdf = np.cumsum(probs, dtype=np.float32)
            hit = np.nonzero(coin < cdf)[0]
            return int(hit[0]) if len(hit) else len(probs) - 1
        cutoff = (1 - np.float32(self.topp)) / (len(probs) - 1)
        cand = sorted((i for i in range(len(probs)) if probs[i] >= cutoff), key=lambda i: -probs[i])
        cum, last = np.float32(0), len(cand) - 1
        for k, i in enumerate(cand):
            cum += probs[i]
            if cum > self.topp:
                last = k
                break
        r, cdf = coin * cum, np.float32(0)
        for i in cand[:last + 1]:
            cdf += probs[i]
            if r < cdf:
                return i
        return cand[last]


@pytest.mark.parametrize("temperature,topp,seed", [(1.0, 0.9, 42), (0.8, 0.0, 7), (1.2, 1.0, 12345)])
def test_sampling_matches_llama2c_procedure(stories, temperature, topp, seed):
    spm = pytest.importorskip("sentencepiece") if not os.environ.get("CI") else __import__("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=stories["spm"])
    config, weights = legacy_to_hf(stories["model"])
    prompt = "Once upon a time"
    tokens = [1] + sp.encode(prompt)
    sampler = Llama2cSampler(seed, temperature, topp)
    steps = 60
    while len(tokens) <= steps:  # run.c makes one token per position, after BOS
        nxt = sampler.sample(reference.forward(config, weights, tokens)[-1])
        if nxt == 1:
            break
        tokens.append(nxt)
    want = sp.decode(tokens[1:]) + "\n"
    got = run(stories["model"], "-z", stories["tok"], "-t", temperature, "-p", topp, "-s", seed,
              "-n", steps, "-i", prompt).stdout.decode()
    assert got == want


def test_perplexity_mode_equals_reference_nll(stories):
    spm = pytest.importorskip("sentencepiece") if not os.environ.get("CI") else __import__("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=stories["spm"])
    text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun."
    out = run(stories["model"], "-z", stories["tok"], "-m", "perplexity", "-i", text).stdout.decode()
    fields = dict(line.split(": ") for line in out.strip().split("\n"))
    tokens = [1] + sp.encode(text)
    config, weights = legacy_to_hf(stories["model"])
    logits = reference.forward(config, weights, tokens)[:-1]
    m = logits.max(axis=1)
    nll = np.mean(m + np.log(np.exp(logits - m[:, None]).sum(axis=1)) - logits[np.arange(len(tokens) - 1), tokens[1:]])
    assert int(fields["tokens"]) == len(tokens)
    assert abs(float(fields["nll"]) - nll) < 1e-5
    assert abs(float(fields["perplexity"]) - np.exp(nll)) < 1e-4
    assert 1.0 < np.exp(nll) < 5.0  # a trained model on its own kind of text


def test_generate_prints_prompt_then_continuation(stories):
    out = run(stories["model"], "-z", stories["tok"], "-t", "0", "-n", "40", "-i", "Lily saw a dog").stdout.decode()
    assert out.startswith("Lily saw a dog")
    assert len(out) > len("Lily saw a dog") + 20


def test_generation_stops_at_n_positions(stories):
    """-n counts positions, prompt included, as in llama2.c: BOS + 9 tokens."""
    ids = run("-m", "tokenize", "-z", stories["tok"], "-i", "Once").stdout.split()
    out = run(stories["model"], "-z", stories["tok"], "-t", "0", "-n", "10", "-i", "Once").stdout.decode()
    full = stories["expected"].decode()
    assert len(ids) == 2 and full.startswith(out.rstrip("\n")) and len(out) < 60


def test_byte_tokens_print_as_whole_utf8_characters(stories):
    """tok512 has no pieces for CJK or emoji: they are byte tokens, echoed back
    whole when the prompt is printed."""
    prompt = "Hi 日本 😀 é!"
    n = len(run("-m", "tokenize", "-z", stories["tok"], "-i", prompt).stdout.split())
    assert n > 12  # mostly byte tokens
    out = run(stories["model"], "-z", stories["tok"], "-t", "0", "-n", n, "-i", prompt).stdout.decode()
    assert out.startswith(prompt)  # then the one token sampled at the last position
