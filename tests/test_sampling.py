"""The sampling controls (issue 17): each rule against a numpy reference of
its formula on random logits, the invariants that tie them to greedy
decoding and to the defaults, and stop strings."""

import os
from collections import Counter

import numpy as np
import pytest

from conftest import harness, run
from test_chat import chat, scripted  # noqa: F401 (a fixture)

OPTIONS = ("temperature", "topp", "top_k", "min_p", "repeat", "last_n", "presence", "frequency")
OFF = dict(temperature=1.0, topp=1.0, top_k=0, min_p=0.0, repeat=1.0, last_n=64, presence=0.0, frequency=0.0)


def reference(logits, history, temperature, topp, top_k, min_p, repeat, last_n, presence, frequency):
    """{token: probability} of the tokens kept, in the documented order:
    penalties over the last last_n tokens, temperature, top-k, top-p (on the
    probabilities renormalized over top-k's survivors), min-p, renormalized;
    and how close the cuts came to their thresholds (float32 vs float64
    rounding can only flip a cut that close)."""
    x = logits.astype(np.float64).copy()
    for t, c in Counter(history[-last_n:]).items():
        x[t] = x[t] / repeat if x[t] > 0 else x[t] * repeat  # CTRL, as llama.cpp
        x[t] -= presence + c * frequency                      # OpenAI
    if temperature == 0:
        return {int(np.argmax(x)): 1.0}, 1.0
    p = np.exp(x / temperature - np.max(x / temperature))
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep, margin = min(top_k, len(p)) if top_k else len(p), 1.0
    if 0 < topp < 1:
        cum = np.cumsum(p[order[:keep]] / p[order[:keep]].sum())
        margin = np.min(np.abs(cum - topp))
        keep = min(keep, int(np.argmax(cum > topp)) + 1 if np.any(cum > topp) else keep)
    if min_p:
        margin = min(margin, np.min(np.abs(p[order[:keep]] - min_p * p[order[0]])) / p[order[0]])
        keep = int(np.sum(p[order[:keep]] >= min_p * p[order[0]]))
    kept = order[:keep]
    return dict(zip(kept.tolist(), (p[kept] / p[kept].sum()).tolist())), margin


def filtered(tmp_path, logits, history, **options):
    (tmp_path / "l.bin").write_bytes(logits.astype("<f4").tobytes())
    (tmp_path / "h.bin").write_bytes(np.asarray(history, dtype="<i4").tobytes())
    out = harness("filter", tmp_path / "l.bin", tmp_path / "h.bin", *(options[k] for k in OPTIONS))
    return {int(a): float(b) for a, b in (line.split() for line in out.strip().splitlines())}


CASES = [dict(OFF, topp=0.9), dict(OFF, top_k=7), dict(OFF, top_k=40, topp=0.8), dict(OFF, min_p=0.05),
         dict(OFF, min_p=0.2, temperature=0.7), dict(OFF, top_k=10, topp=0.95, min_p=0.1, temperature=1.3),
         dict(OFF, repeat=1.3), dict(OFF, repeat=0.8, last_n=5), dict(OFF, presence=1.5),
         dict(OFF, frequency=0.7, last_n=30), dict(OFF, repeat=1.1, presence=0.5, frequency=0.4, top_k=20, topp=0.9),
         dict(OFF, temperature=0.0, repeat=1.5, presence=2.0)]


@pytest.mark.parametrize("options", CASES, ids=[str(i) for i in range(len(CASES))])
def test_each_rule_equals_its_formula(tmp_path, options):
    rng = np.random.default_rng(len(str(options)))
    trials = 0
    while trials < 5:
        logits = rng.normal(0, 2.5, 2000).astype(np.float32)
        history = rng.integers(0, 60, 80).tolist()  # repeats, on tokens the window can reach
        want, margin = reference(logits, history, **options)
        if margin < 1e-5:  # a cut within float32 rounding of its threshold: either side is right
            continue
        trials += 1
        got = filtered(tmp_path, logits, history, **options)
        assert set(got) == set(want), f"trial {trials}: kept {len(got)} tokens, expected {len(want)}"
        assert max(abs(got[t] - want[t]) for t in want) < 2e-5


@pytest.fixture(scope="module")
def s260(shared):
    return os.path.join(shared, "models", "stories260K.bin"), os.path.join(shared, "models", "tok512.bin")


def story(s260, *args):
    model, tok = s260
    return run(model, "-z", tok, "-n", "80", "-i", "Once upon a time", *args).stdout


def test_top_k_1_and_min_p_1_are_greedy_at_any_temperature(s260):
    greedy = story(s260, "-t", "0")
    for args in (("--top-k", "1", "-t", "1.0"), ("--top-k", "1", "-t", "3"), ("--min-p", "1", "-t", "0.8"),
                 ("--min-p", "1", "-t", "2", "-p", "0.5")):
        assert story(s260, *args, "-s", "7") == greedy, args


def test_neutral_penalties_change_nothing(s260):
    plain = story(s260, "-t", "1", "-s", "3")
    assert story(s260, "-t", "1", "-s", "3", "--repeat-penalty", "1", "--presence-penalty", "0",
                 "--frequency-penalty", "0", "--repeat-last-n", "5") == plain
    assert story(s260, "-t", "1", "-s", "3", "--repeat-penalty", "1.5") != plain  # and a real one does


def test_repeat_penalty_breaks_greedy_loops(s260):
    """A tiny model's greedy text repeats itself; a penalty on the last 64
    tokens changes what it picks (at temperature 0 the penalties still act)."""
    greedy = story(s260, "-t", "0").decode()
    penalized = story(s260, "-t", "0", "--repeat-penalty", "1.3").decode()
    assert penalized != greedy and penalized.startswith("Once upon a time")


def test_stop_string_spanning_tokens_is_cut_exactly(s260):
    full = story(s260, "-t", "0").decode()
    body = full[len("Once upon a time"):]
    stop = body[body.index(" ") + 1:][:9]  # nine characters from the second word: several tokens
    assert len(stop.strip()) >= 5
    cut = story(s260, "-t", "0", "--stop", stop).decode()
    assert cut == full[:full.index(stop, len("Once upon a time"))] + "\n"
    # several stop strings: the earliest occurrence wins; one that never comes changes nothing
    assert story(s260, "-t", "0", "--stop", "zzzz", "--stop", stop).decode() == cut
    assert story(s260, "-t", "0", "--stop", "zzzz").decode() == full


def test_stop_string_ends_a_chat_reply(scripted):
    """The scripted model answers "Arr" each turn: with --stop "rr" each
    reply prints "A", the turn is closed, and no position is computed twice."""
    out, fed = chat(scripted, "Hello there!\nAgain\n", "--stop", "rr")
    assert out == "A\nA\n"
    assert [p for p, _ in fed] == list(range(len(fed)))


@pytest.mark.parametrize("args,message", [
    (("--top-k", "-1"), "--top-k must be between 0 and"), (("--min-p", "1.5"), "--min-p must be between 0 and 1"),
    (("--repeat-penalty", "0"), "--repeat-penalty must be between"), (("--repeat-last-n", "0"), "--repeat-last-n"),
    (("--presence-penalty", "x"), "--presence-penalty expects a number"), (("--stop", ""), "non-empty"),
])
def test_out_of_range_values_get_one_line(s260, args, message):
    model, tok = s260
    p = run(model, "-z", tok, "-n", "4", *args, check=False)
    assert p.returncode == 1 and message in p.stderr.decode() and p.stderr.count(b"\n") == 1


@pytest.fixture(scope="module")
def chat_model(shared, tmp_path_factory):
    """A tiny model with SmolLM2's tokenizer and ChatML, exported from a
    checkpoint whose generation_config.json recommends Qwen3-style sampling."""
    import json
    import shutil
    import hf
    from conftest import export
    d = tmp_path_factory.mktemp("gen")
    config = {"vocab_size": 49152, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True}
    hf.write_checkpoint(d / "hf", config, hf.random_llama(config, 0))
    (d / "hf" / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "eos_token_id": 2}))
    shutil.copy(f"{shared}/tokenizers/smollm2/tokenizer.json", d / "hf" / "tokenizer.json")
    (d / "out").mkdir()
    export(d / "out" / "model.bin", "--hf", d / "hf")
    return d / "out" / "model.bin"


def sampling_line(model, *args):
    p = run(model, "-m", "chat", "--template", "chatml", "--verbose", "-y", "", *args, input=b"")
    return next(line for line in p.stderr.decode().splitlines() if line.startswith("sampling"))


def test_chat_uses_the_models_recommended_sampling_unless_a_flag_says_otherwise(chat_model):
    line = sampling_line(chat_model)
    assert "temperature 0.6 (the model's generation_config)" in line
    assert "top-p 0.95 (the model's generation_config)" in line and "top-k 20 (the model's" in line
    assert "min-p 0 (default)" in line and "repeat penalty 1 (default)" in line
    line = sampling_line(chat_model, "-t", "0.2", "--top-k", "5", "--repeat-penalty", "1.1")
    assert "temperature 0.2 (flag)" in line and "top-k 5 (flag)" in line and "repeat penalty 1.1 (flag)" in line
    assert "top-p 0.95 (the model's generation_config)" in line


def test_generation_config_out_of_range_is_refused(tmp_path):
    import json
    import hf
    from conftest import export
    config = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2}
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, 0))
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps({"top_p": 1.5}))
    p = export(tmp_path / "m.bin", "--hf", tmp_path / "hf", check=False)
    assert p.returncode == 1 and "generation_config.json's top_p is 1.5" in p.stderr
