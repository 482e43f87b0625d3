"""--trace-html (issue 15): the page's numbers against the numpy reference
and --probs, the page itself in a real browser (headless Chromium), and its
errors."""

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

import hf
import reference
from conftest import ROOT, export, run
from test_teaching import parse_probs

PROMPT = "Once upon a time, there was a little dog named Spot. Spot liked to run in the park with his friends."

# 16-wide heads: a prompt chunk's attention takes attend_panels; 8-wide ones attend_each
CONFIGS = {
    "gqa-hd16": {"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 3, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "vocab_size": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0},
    "gqa-hd8": {"hidden_size": 64, "intermediate_size": 120, "num_hidden_layers": 2, "num_attention_heads": 8,
                "num_key_value_heads": 2, "vocab_size": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                "tie_word_embeddings": True},
}


def page_data(path):
    """The JSON the page carries, with its attention weights decoded to
    (n_layers, n_heads, positions, positions)."""
    text = open(path, encoding="utf-8").read()
    m = re.search(r'<script id="trace-data" type="application/json">\n(.*?)\n</script>', text, re.S)
    data = json.loads(m.group(1))
    P, L, H = data["positions"], data["n_layers"], data["n_heads"]
    data["attention"] = np.frombuffer(base64.b64decode(data["attention"]), dtype="<f4").reshape(L, H, P, P)
    return data


@pytest.fixture(scope="module")
def tok512(shared):
    return os.path.join(shared, "models", "tok512.bin")


@pytest.mark.parametrize("name", CONFIGS)
def test_attention_and_logit_lens_equal_the_reference(tmp_path, tok512, name):
    """Every attention weight of every layer and head equals the reference's
    softmax within 1e-5 (rows sum to 1, zero past the causal boundary), and
    each layer's logit-lens prediction is the reference's: the final norm and
    the classifier applied to that layer's residual stream."""
    config = CONFIGS[name]
    weights = hf.random_llama(config, 3)
    full = hf.write_checkpoint(tmp_path / "hf", config, weights)
    export(tmp_path / "m.bin", "--hf", tmp_path / "hf")
    run(tmp_path / "m.bin", "-z", tok512, "-i", PROMPT, "-n", 60, "-t", 0.8, "-s", 7,
        "--trace-html", tmp_path / "t.html")
    data = page_data(tmp_path / "t.html")
    P, att = data["positions"], data["attention"]
    assert data["n_prompt"] > 16 and P > data["n_prompt"] + 10  # a chunk of the prompt, then generation
    tokens = [t["id"] for t in data["tokens"][:P]]
    inside = {}
    reference.forward(full, weights, tokens, inside=inside)
    want = np.stack(inside["attention"])  # (layers, heads, P, P)
    assert att.shape == want.shape
    assert np.max(np.abs(att - want)) < 1e-5
    assert np.allclose(att.sum(axis=-1), 1.0, atol=1e-5)
    assert np.all(att[:, :, np.triu_indices(P, 1)[0], np.triu_indices(P, 1)[1]] == 0)

    w = {k: v.astype(np.float64) for k, v in weights.items()}
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    for layer, x in enumerate(inside["residual"]):
        logits = reference.rms_norm(x, w["model.norm.weight"], full["rms_norm_eps"]) @ head.T
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        top2 = np.sort(p, axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-5  # a near tie may fall either way in float32
        got_token, got_prob = np.array(data["lens"]["token"][layer]), np.array(data["lens"]["prob"][layer])
        assert np.all(got_token[clear] == np.argmax(p, axis=-1)[clear]), f"layer {layer}"
        assert np.max(np.abs(got_prob - p.max(axis=-1))) < 1e-5, f"layer {layer}"
    # the last layer's lens is the model's own prediction: the tokens greedy decoding would pick
    assert all(st["candidates"][0][0] == data["lens"]["token"][-1][st["pos"] - 1] for st in data["steps"])


def test_candidates_equal_probs_and_the_tokens_sampled(s260, tmp_path):
    """Each generated token's candidates are what --probs prints for the same
    run, with the same cuts; the chosen token is the next one of the text."""
    model, tok = s260
    p = run(model, "-z", tok, "-i", "Once upon a time", "-n", 40, "-t", 1.0, "-p", 0.9, "-s", 11, "--probs", 10,
            "--trace-html", tmp_path / "t.html")
    printed = parse_probs(p.stderr.decode())
    data = page_data(tmp_path / "t.html")
    assert len(data["steps"]) == len(printed) > 10
    cuts = set()
    for step, (pos, _, chosen_pct, cands) in zip(data["steps"], printed):
        assert step["pos"] == pos
        assert data["tokens"][pos]["id"] == step["chosen"]
        assert abs(100 * step["p"] - chosen_pct) < 0.051
        assert len(step["candidates"]) == len(cands) == 10
        for (_, prob, cut), (_, pct, printed_cut) in zip(step["candidates"], cands):
            assert abs(100 * prob - float(pct)) < 0.051
            assert cut == printed_cut
            cuts.add(cut)
    assert "top-p" in cuts  # the cut labels were exercised


def test_token_chips_are_what_tokenize_show_prints(s260, tmp_path):
    """The page's prompt tokens: the same ids and texts as -m tokenize --show
    (bytes as <0x..>, control tokens marked), with each token's bytes."""
    model, tok = s260
    prompt = "Hello w\u00f6rld \u65e5\u672c! Once"
    shown = run("-m", "tokenize", "--show", "-z", tok, "-i", prompt).stdout.decode().splitlines()
    pieces = re.findall(r"\[(.*?)\]|\{(.*?)\}", shown[0])
    ids = [int(i) for i in shown[1].split()[1:]]
    run(model, "-z", tok, "-i", prompt, "-n", 24, "-t", 0, "--trace-html", tmp_path / "t.html")
    data = page_data(tmp_path / "t.html")
    chips = data["tokens"][:data["n_prompt"]]
    assert [c["id"] for c in chips] == ids
    assert [(c["text"], c["kind"] == 3) for c in chips] == [(a or b, bool(b)) for a, b in pieces]
    assert any(c["kind"] == 2 for c in chips) and chips[0]["kind"] == 3
    assert bytes.fromhex(chips[-1]["bytes"]).decode() == " Once"


@pytest.fixture(scope="module")
def s260(shared):
    return os.path.join(shared, "models", "stories260K.bin"), os.path.join(shared, "models", "tok512.bin")


def chromium():
    """Debian's chromium; skips without it, but fails under CI."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("chromium is missing, and CI needs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium): the page is not rendered")


class Elements(HTMLParser):
    """Each element of a DOM as (tag, attributes), and the text of those with an id."""

    def __init__(self):
        super().__init__()
        self.all, self.text, self.open = [], {}, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.all.append((tag, attrs))
        if tag not in ("br", "meta", "img", "input"):
            self.open.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if self.open:
            self.open.pop()

    def handle_data(self, data):
        for key in self.open:
            if key:
                self.text[key] = self.text.get(key, "") + data

    def having(self, tag, cls=None, **attrs):
        return [a for t, a in self.all if t == tag and (cls is None or cls in (a.get("class") or "").split())
                and all(a.get(k) == v for k, v in attrs.items())]


def headless(browser, *args, cwd=None):
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--enable-logging=stderr", "--v=0", *args], capture_output=True, text=True, timeout=180,
                          cwd=cwd)


def test_page_renders_every_panel_in_a_browser(s260, tmp_path):
    """Opened from disk by headless Chromium: no script errors, and each
    panel has as many chips, bars, options, cells and rows as the trace has
    tokens, steps, layers, heads and positions. Saves a screenshot (to
    docs/trace-page.png with RUNC_SCREENSHOT=1: the one the README shows)."""
    browser = chromium()
    model, tok = s260
    run(model, "-z", tok, "-i", "Once upon a time, there was a little", "-n", 48, "-t", 0.8, "-s", 5,
        "--trace-html", tmp_path / "t.html")
    data = page_data(tmp_path / "t.html")
    P, L, H, KV = data["positions"], data["n_layers"], data["n_heads"], data["n_kv_heads"]
    url = "file://" + str(tmp_path / "t.html")
    p = headless(browser, "--virtual-time-budget=10000", "--dump-dom", url)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Uncaught" not in p.stderr, p.stderr[-2000:]
    dom = Elements()
    dom.feed(p.stdout)
    body = dom.having("body")[0]
    assert body["data-errors"] == "0" and body["data-ready"] == "1"
    assert len(dom.having("span", "token")) == len(data["tokens"]) == P + 1
    assert len(dom.having("span", "generated")) == P + 1 - data["n_prompt"]
    assert len(dom.having("div", "step")) == len(data["steps"]) == P + 1 - data["n_prompt"]
    assert len(dom.having("div", "candidate")) == 10 * len(data["steps"])
    shown = sum(any(c[0] == st["chosen"] for c in st["candidates"]) for st in data["steps"])
    assert len(dom.having("div", "chosen")) == shown > 0
    assert len(dom.having("option")) == L + H
    canvas = dom.having("canvas", id="heatmap")[0]
    assert int(canvas["data-positions"]) == P and int(canvas["width"]) % P == 0
    assert len(dom.having("div", "kv-group")) == KV and len(dom.having("span", "q-head")) == H
    assert len(dom.having("tr")) == L + 1 and len(dom.having("td")) == L * P and len(dom.having("th")) == (L + 1) * (P + 1) - L * P
    assert "query heads sharing" in dom.text["card"] and "stories260K" in dom.text["card"]
    assert dom.text["sampling"] == "This run: temperature 0.8, top-k off, top-p 0.9, min-p off."

    shot = tmp_path / "page.png"
    p = headless(browser, "--hide-scrollbars", "--window-size=1100,1900", "--virtual-time-budget=10000",
                 f"--screenshot={shot}", url)
    assert p.returncode == 0 and shot.stat().st_size > 20000, p.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RUNC_SCREENSHOT"):
        shutil.copy(shot, os.path.join(ROOT, "docs", "trace-page.png"))


def test_no_page_is_left_behind_after_an_error(s260, tmp_path):
    """An unwritable path, a run past the page's limit, or another mode: one
    line, exit status 1, and no file (nor its temporary) left."""
    model, tok = s260
    p = run(model, "-z", tok, "-i", "Once", "-n", 20, "--trace-html", tmp_path / "no" / "such" / "dir" / "t.html",
            check=False)
    assert p.returncode == 1 and p.stderr.decode().count("\n") == 1
    assert "--trace-html" in p.stderr.decode() and "cannot write" in p.stderr.decode()
    # stories260K: 5 layers x 8 heads, so at most sqrt(2^23 / 40) = 457 positions
    p = run(model, "-z", tok, "-i", "Once", "-n", 500, "--trace-html", tmp_path / "t.html", check=False)
    assert p.returncode == 1 and p.stderr.decode().count("\n") == 1, p.stderr
    assert "at most 457 positions" in p.stderr.decode()
    p = run(model, "-z", tok, "-m", "perplexity", "-i", "Once upon a time", "--trace-html", tmp_path / "t.html",
            check=False)
    assert p.returncode == 1 and "generate mode" in p.stderr.decode()
    assert os.listdir(tmp_path) == []
    p = run(model, "-z", tok, "-i", "Once", "-n", 457, "--trace-html", tmp_path / "t.html")  # the limit itself runs
    assert os.listdir(tmp_path) == ["t.html"]
