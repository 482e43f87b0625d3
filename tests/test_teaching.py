"""The teaching views, pinned on stories260K: tokens made visible, the
probabilities behind each sampled token, and the model card."""

import os
import re

import pytest

from conftest import TOKENIZER, run


@pytest.fixture(scope="module")
def s260(shared):
    return os.path.join(shared, "models", "stories260K.bin"), os.path.join(shared, "models", "tok512.bin")


def test_tokenize_show_marks_every_token(s260):
    _, tok = s260
    out = run("-m", "tokenize", "--show", "-z", tok, "-i", "Hello wörld 日本!").stdout.decode()
    assert out == ("{\\n<s>\\n}[ He][ll][o][ w][<0xC3>][<0xB6>][r][ld][ ][<0xE6>][<0x97>][<0xA5>][<0xE6>][<0x9C>]"
                   "[<0xAC>][!]\nids: 1 346 306 414 263 198 185 420 341 410 233 154 168 233 159 175 443\ntokens: 17\n")


def test_tokenize_show_escapes_newlines_and_marks_split_characters(shared, tmp_path):
    from conftest import export
    tok = tmp_path / "llama3.bin"
    export(tok, "--tokenizer", os.path.join(shared, "tokenizers", "llama3", "tokenizer.model"))
    out = run("-m", "tokenize", "--show", "-z", tok, "-i", "a\tb 👋🏽\n").stdout.decode()
    first = out.splitlines()[0]
    assert first.startswith("{<|begin_of_text|>}[a][\\tb]")
    assert "<0xF0>" in first  # an emoji split over tokens shows as bytes
    assert out.splitlines()[2] == f"tokens: {len(out.splitlines()[1].split()) - 1}"


def parse_probs(stderr):
    rows = []
    for line in stderr.splitlines():
        m = re.match(r"\[pos (\d+)\] '(.*)' ([\d.]+)% \|(.*)$", line)
        if m:
            cands = re.findall(r" '(.*?)' ([\d.]+)%(?: \(cut: ([a-z-]+)\))?", m.group(4))
            rows.append((int(m.group(1)), m.group(2), float(m.group(3)), cands))
    return rows


def test_probs_greedy_shows_the_argmax_and_cuts_the_rest(s260):
    model, tok = s260
    p = run(model, "-z", tok, "-t", "0", "-n", "12", "--probs", "3", "-i", "Once upon")
    rows = parse_probs(p.stderr.decode())
    assert len(rows) == 10 and rows[0][0] == 3
    for pos, chosen, prob, cands in rows:
        assert len(cands) == 3
        assert cands[0][0] == chosen and float(cands[0][1]) == prob  # greedy takes the most likely
        assert [float(c[1]) for c in cands] == sorted((float(c[1]) for c in cands), reverse=True)
        assert not cands[0][2] and all(c[2] == "greedy" for c in cands[1:])
    assert rows[0][1:3] == (" a", 98.8)  # pinned: "Once upon" -> " a"


def test_probs_with_top_p_cuts_after_the_nucleus(s260):
    model, tok = s260
    p = run(model, "-z", tok, "-t", "1", "-p", "0.5", "-s", "3", "-n", "30", "--probs", "5", "-i", "Lily")
    for pos, chosen, prob, cands in parse_probs(p.stderr.decode()):
        kept = [c for c in cands if not c[2]]
        assert kept, "the most likely token is always kept"
        assert chosen in [c[0] for c in kept] or len(kept) == len(cands)
        total = 0.0
        for text, pr, cut in cands:  # everything after the nucleus is cut, nothing before
            if cut:
                assert cut == "top-p" and total > 49.9
            total += float(pr)


def test_probs_cost_nothing_when_off(s260):
    model, tok = s260
    assert b"[pos" not in run(model, "-z", tok, "-t", "0", "-n", "8").stderr


def test_verbose_model_card(s260):
    model, tok = s260
    err = run(model, "-z", tok, "-n", "8", "--verbose").stderr.decode()
    assert "dim 64, ffn 172, 5 layers, 8 query heads sharing 4 key/value heads of 8, vocab 512" in err
    assert "weights fp32" in err and "MB mapped" in err and "KV cache for 8 positions" in err
    assert re.search(r"compute +\d+ threads?, \S+", err)
    if "AVX" in err:  # the x86 builds' prefetch distances, chosen by the core's maker (choose_prefetch)
        assert re.search(r"prefetch +rows \d+ bytes ahead into L2, \d+ into L1", err)


def test_probs_name_the_rule_that_cuts(s260):
    """With top-k, top-p and min-p together, --probs marks each candidate
    with the first rule (in their order of application) that removes it,
    and the chosen token is always one that none removed."""
    model, tok = s260
    p = run(model, "-z", tok, "-t", "1.5", "--top-k", "4", "-p", "0.9", "--min-p", "0.3", "-s", "5", "-n", "40",
            "--probs", "6", "-i", "Lily")
    seen = set()
    for pos, chosen, prob, cands in parse_probs(p.stderr.decode()):
        cuts = [c[2] for c in cands]
        assert cuts[4:] == ["top-k"] * 2  # beyond the 4 most likely
        order = ["", "top-p", "min-p"]  # within the top 4: kept, then those min-p cuts, then top-p's
        assert all(c in order for c in cuts[:4])
        assert chosen in [c[0] for c in cands if not c[2]]
        seen.update(cuts)
        probs = [float(c[1]) for c in cands]
        for (text, pr, cut) in cands[:4]:
            if cut == "min-p":
                assert float(pr) < 0.3 * probs[0] + 0.1
    assert {"top-k", "min-p"} <= seen
