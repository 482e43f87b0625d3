"""Chat: each template renders exactly the tokens of its family's published
Hugging Face template, and a piped multi-turn conversation runs end to end
on the KV cache without recomputing anything."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import hf
import ref_bpe
from conftest import RUN, TOKENIZER, export, harness, run

SYSTEM, U1, A1, U2 = "You are a pirate.", "Hello there!", "Arr, hello.", "Tell me a joke."


@pytest.fixture(scope="module")
def spm(shared):
    if os.environ.get("CI"):
        import sentencepiece
    else:
        sentencepiece = pytest.importorskip("sentencepiece")
    sp = sentencepiece.SentencePieceProcessor(model_file=f"{shared}/tokenizers/llama2/tokenizer.model")
    return sp.encode


@pytest.fixture(scope="module")
def llama3(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("l3") / "tokenizer.bin"
    export(out, "--tokenizer", f"{shared}/tokenizers/llama3/tokenizer.model")
    return out, ref_bpe.Tiktoken(f"{shared}/tokenizers/llama3/tokenizer.model").encode


@pytest.fixture(scope="module")
def smollm2(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("smol") / "tokenizer.bin"
    export(out, "--tokenizer", f"{shared}/tokenizers/smollm2/tokenizer.json")
    return out, ref_bpe.TokenizerJson(f"{shared}/tokenizers/smollm2/tokenizer.json").encode


def render(tmp_path, tokenizer, template, turns):
    path = tmp_path / "conversation.bin"
    path.write_bytes(b"".join(role.encode() + b"\0" + text.encode() + b"\0" for role, text in turns))
    return [int(i) for i in harness("render", tokenizer, template, path).split()]


CONVERSATION = [("system", SYSTEM), ("user", U1), ("assistant", A1), ("user", U2)]


def test_llama2_template(tmp_path, spm):
    # <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]
    want = ([1] + spm(f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{U1} [/INST] {A1} ") + [2]
            + [1] + spm(f"[INST] {U2} [/INST]"))
    assert render(tmp_path, TOKENIZER, "llama2", CONVERSATION) == want


def test_mistral_template(tmp_path, spm):
    # <s>[INST] {user} [/INST]{answer}</s>[INST] {user} [/INST]; the system prompt leads the first message
    want = [1] + spm(f"[INST] {SYSTEM}\n\n{U1} [/INST]{A1}") + [2] + spm(f"[INST] {U2} [/INST]")
    assert render(tmp_path, TOKENIZER, "mistral", CONVERSATION) == want


def test_zephyr_template(tmp_path, spm):
    # <|system|>\n{system}</s>\n<|user|>\n{user}</s>\n<|assistant|>\n{answer}</s>\n ... <|assistant|>\n (no BOS)
    want = (spm(f"<|system|>\n{SYSTEM}") + [2] + spm(f"\n<|user|>\n{U1}") + [2] + spm(f"\n<|assistant|>\n{A1}")
            + [2] + spm(f"\n<|user|>\n{U2}") + [2] + spm("\n<|assistant|>\n"))
    assert render(tmp_path, TOKENIZER, "zephyr", CONVERSATION) == want


def llama3_expected(enc, system_text):
    sh, eh, eot = 128006, 128007, 128009

    def header(role):
        return [sh] + enc(role.encode()) + [eh]
    return ([128000] + header("system") + enc(f"\n\n{system_text}".encode()) + [eot]
            + header("user") + enc(f"\n\n{U1}".encode()) + [eot]
            + header("assistant") + enc(f"\n\n{A1}".encode()) + [eot]
            + header("user") + enc(f"\n\n{U2}".encode()) + [eot]
            + header("assistant") + enc(b"\n\n"))


def test_llama3_template(tmp_path, llama3):
    tok, enc = llama3
    assert render(tmp_path, tok, "llama3", CONVERSATION) == llama3_expected(enc, SYSTEM)


def test_llama31_template_dates_the_system_message(tmp_path, llama3):
    tok, enc = llama3
    system = f"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{SYSTEM}"
    assert render(tmp_path, tok, "llama3.1", CONVERSATION) == llama3_expected(enc, system)


def chatml_expected(enc, system):
    s, e = 1, 2  # SmolLM2's <|im_start|> and <|im_end|>
    return ([s] + enc(f"system\n{system}".encode()) + [e] + enc(b"\n")
            + [s] + enc(f"user\n{U1}".encode()) + [e] + enc(b"\n")
            + [s] + enc(f"assistant\n{A1}".encode()) + [e] + enc(b"\n")
            + [s] + enc(f"user\n{U2}".encode()) + [e] + enc(b"\n")
            + [s] + enc(b"assistant\n"))


def test_chatml_template(tmp_path, smollm2):
    tok, enc = smollm2
    assert render(tmp_path, tok, "chatml", CONVERSATION) == chatml_expected(enc, SYSTEM)


QWEN_TEMPLATE = ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] "
                 "+ '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
                 "You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}"
                 "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}"
                 "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def test_chatml_default_system_prompt_comes_from_the_template(shared, tmp_path, smollm2):
    _, enc = smollm2
    shutil.copy(f"{shared}/tokenizers/smollm2/tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": QWEN_TEMPLATE}))
    export(tmp_path / "tok.bin", "--tokenizer", tmp_path)
    turns = [t for t in CONVERSATION if t[0] != "system"]
    default = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert render(tmp_path, tmp_path / "tok.bin", "chatml", turns) == chatml_expected(enc, default)


@pytest.mark.parametrize("marker,name", [("<|start_header_id|>", "llama3"), ("<<SYS>>[INST]", "llama2"),
                                         ("[INST]", "mistral"), ("<|user|><|assistant|>", "zephyr")])
def test_export_detects_the_template(shared, tmp_path, marker, name):
    import struct
    shutil.copy(f"{shared}/tokenizers/llama2/tokenizer.model", tmp_path / "tokenizer.model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ '" + marker + "' }}"}))
    export(tmp_path / "tok.bin", "--tokenizer", tmp_path)
    template = struct.unpack("<i", (tmp_path / "tok.bin").read_bytes()[44:48])[0]
    assert template == ["none", "llama2", "llama3", "llama3.1", "chatml", "zephyr", "mistral"].index(name)


# --- a conversation through a pipe -------------------------------------------

def scripted_weights(config, transitions):
    """Weights of a model that writes a fixed script: every layer outputs
    zeros, so the last hidden state is the current token's own (unit, random)
    embedding, and classifier row `next` is that embedding scaled up, so token
    `current` is followed by `next` for each (current, next) in transitions."""
    w = hf.random_llama(config, 0)
    rng = np.random.default_rng(0)
    vocab, dim = config["vocab_size"], config["hidden_size"]
    emb = rng.normal(size=(vocab, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    w["model.embed_tokens.weight"] = emb
    for name in w:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            w[name][:] = 0
        if name.endswith("norm.weight"):
            w[name][:] = 1
    head = rng.normal(0, 0.01, (vocab, dim)).astype(np.float32)
    for current, nxt in transitions:
        head[nxt] = 20 * emb[current]
    w["lm_head.weight"] = head
    return w


@pytest.fixture(scope="module")
def scripted(shared, tmp_path_factory):
    """A model that answers every turn with "Arr" then <|im_end|> (the
    assistant header's newline -> "Arr" -> <|im_end|>)."""
    d = tmp_path_factory.mktemp("scripted")
    arr, im_end, newline = 40909, 2, 198  # SmolLM2: "Arr" is one token
    config = {"model_type": "llama", "vocab_size": 49152, "hidden_size": 64, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "tie_word_embeddings": False, "max_position_embeddings": 512, "bos_token_id": 1, "eos_token_id": 2}
    hf.write_checkpoint(d / "hf", config, scripted_weights(config, [(newline, arr), (arr, im_end)]))
    shutil.copy(f"{shared}/tokenizers/smollm2/tokenizer.json", d / "hf" / "tokenizer.json")
    (d / "hf" / "tokenizer_config.json").write_text(json.dumps({"chat_template": QWEN_TEMPLATE}))
    (d / "out").mkdir()
    export(d / "out" / "model.bin", "--hf", d / "hf")
    return d / "out" / "model.bin"


def chat(model, text, *args):
    p = subprocess.run([RUN, model, "-m", "chat", "-t", "0", "--trace", *args], input=text.encode(),
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    fed = [tuple(map(int, line[5:].replace("]", "").split())) for line in p.stderr.decode().splitlines()
           if line.startswith("[pos ")]
    return p.stdout.decode(), fed


def test_piped_multi_turn_conversation(scripted, smollm2, tmp_path):
    tok, enc = smollm2
    out, fed = chat(scripted, "Hello there!\nTell me\\\na joke.\n", "-y", SYSTEM)
    assert out == "Arr\nArr\n"
    positions = [p for p, _ in fed]
    assert positions == list(range(len(fed))), "a position was computed twice or skipped"
    turns = [("system", SYSTEM), ("user", U1), ("assistant", "Arr"), ("user", "Tell me\na joke.")]
    want = render(tmp_path, tok, "chatml", turns) + [40909]  # the second reply's token
    assert [t for _, t in fed] == want


def test_reset_and_exit(scripted):
    out, fed = chat(scripted, "Hi\n/reset\nHi\n/exit\nnever read\n", "-y", SYSTEM)
    assert out == "Arr\n(conversation cleared)\nArr\n"
    first = [t for p, t in fed[:len(fed) // 2]]
    second = [t for p, t in fed[len(fed) // 2:]]
    assert first == second and fed[len(fed) // 2][0] == 0


def test_context_full_is_said_and_never_overflows(scripted):
    out, fed = chat(scripted, "Hi\n" + "many words " * 20 + "\nHi\n/reset\nHi\n", "-n", "40", "-y", SYSTEM)
    lines = out.splitlines()
    assert lines[0] == "Arr" and "context is full" in lines[1] and lines[2] == "Arr"
    assert max(p for p, _ in fed) < 40


def test_default_system_prompt_is_used_without_y(scripted, tmp_path):
    out, fed = chat(scripted, "Hello there!\n")
    turns = [("user", U1)]  # the tokenizer beside the model carries Qwen's default system prompt
    assert [t for _, t in fed[:-1]] == render(tmp_path, scripted.parent / "tokenizer.bin", "chatml", turns)


def test_no_template_is_a_clear_error(shared, tmp_path):
    p = run(f"{shared}/models/stories260K.bin", "-z", f"{shared}/models/tok512.bin", "-m", "chat", check=False,
            input=b"hi\n")
    assert p.returncode == 1 and b"no known chat template" in p.stderr and b"--template" in p.stderr


def test_ctrl_c_stops_the_reply_and_returns_to_the_prompt(shared, tmp_path):
    """A random model never ends its reply by itself: Ctrl-C (SIGINT) does."""
    import signal
    import time
    config = {"model_type": "llama", "vocab_size": 49152, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "max_position_embeddings": 100000, "tie_word_embeddings": True}
    hf.write_checkpoint(tmp_path / "hf", config, hf.random_llama(config, 0))
    shutil.copy(f"{shared}/tokenizers/smollm2/tokenizer.json", tmp_path / "hf" / "tokenizer.json")
    (tmp_path / "out").mkdir()
    export(tmp_path / "out" / "m.bin", "--hf", tmp_path / "hf")
    # greedy, so that the reply is the same every run (and never ends by itself here)
    p = subprocess.Popen([RUN, tmp_path / "out" / "m.bin", "-m", "chat", "--template", "chatml", "-n", "100000", "-t", "0",
                          "--stats"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(b"Hello\n")
    p.stdin.flush()
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    time.sleep(0.2)
    out, err = p.communicate(b"/exit\n", timeout=60)
    assert p.returncode == 0, err.decode()
    assert b"tok/s" in err  # the reply ended and printed its statistics
    assert out.endswith(b"\n")


# --- a reasoning model: DeepSeek-R1-Distill (Qwen layout) ---------------------

R1_SPECIAL = {"bos": "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "eos": "<\uff5cend\u2581of\u2581sentence\uff5c>",
              "user": "<\uff5cUser\uff5c>", "assistant": "<\uff5cAssistant\uff5c>", "think": "<think>",
              "end_think": "</think>"}
R1_TEMPLATE = ("{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}"
               "{{'<\uff5cUser\uff5c>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' %}"
               "{{'<\uff5cAssistant\uff5c>' + content + '<\uff5cend\u2581of\u2581sentence\uff5c>'}}{%- endif %}"
               "{%- endfor -%}{% if add_generation_prompt %}{{'<\uff5cAssistant\uff5c><think>\\n'}}{% endif %}")


@pytest.fixture(scope="module")
def r1_dir(shared, tmp_path_factory):
    """SmolLM2's vocabulary with R1-Distill's added tokens (as in its tokenizer.json:
    BOS/EOS special, User/Assistant/think not) and its chat template."""
    d = tmp_path_factory.mktemp("r1")
    with open(f"{shared}/tokenizers/smollm2/tokenizer.json", encoding="utf-8") as f:
        tj = json.load(f)
    ids = {}
    for k, name in enumerate(["bos", "eos", "user", "assistant", "think", "end_think"]):
        ids[name] = 49152 + k
        tj["added_tokens"].append({"id": ids[name], "content": R1_SPECIAL[name], "special": name in ("bos", "eos")})
    (d / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": R1_TEMPLATE, "bos_token": R1_SPECIAL["bos"], "eos_token": R1_SPECIAL["eos"]}))
    return d, ids


def test_deepseek_r1_template(r1_dir, tmp_path, smollm2):
    """BOS, the system prompt untagged, <｜User｜>message, and the generation
    prompt <｜Assistant｜><think>\n that starts the reply thinking. (Hugging
    Face re-renders earlier replies without their thinking; run.c keeps each
    reply in the KV cache as the model wrote it, thinking included.)"""
    d, ids = r1_dir
    _, enc = smollm2
    export(tmp_path / "tok.bin", "--tokenizer", d)
    with open(tmp_path / "tok.bin", "rb") as f:
        assert int.from_bytes(f.read(48)[44:48], "little") == 7  # recorded as deepseek-r1
    want = ([ids["bos"]] + enc(SYSTEM.encode()) + [ids["user"]] + enc(U1.encode())
            + [ids["assistant"], ids["think"]] + enc(b"\n"))
    assert render(tmp_path, tmp_path / "tok.bin", "deepseek-r1", [("system", SYSTEM), ("user", U1)]) == want


def test_reasoning_model_chats_and_marks_its_thinking(r1_dir, tmp_path):
    """A scripted R1-Distill-Qwen-shaped model (q/k/v biases, tied) answers
    'Arr</think>Yes' then EOS: the thinking is marked apart from the answer."""
    d, ids = r1_dir
    config = {"model_type": "qwen2", "vocab_size": 49158, "hidden_size": 64, "intermediate_size": 64,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "tie_word_embeddings": False, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "bos_token_id": ids["bos"], "eos_token_id": ids["eos"]}
    arr, yes, newline = 40909, 10539, 198
    w = scripted_weights(config, [(newline, arr), (arr, ids["end_think"]), (ids["end_think"], yes),
                                  (yes, ids["eos"])])
    hf.write_checkpoint(tmp_path / "hf", config, w)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(d / f, tmp_path / "hf" / f)
    (tmp_path / "out").mkdir()
    export(tmp_path / "out" / "model.bin", "--hf", tmp_path / "hf")
    out, fed = chat(tmp_path / "out" / "model.bin", "Hello there!\nAgain?\n")
    assert out == "[think]Arr[/think]Yes\n[think]Arr[/think]Yes\n"
    assert [p for p, _ in fed] == list(range(len(fed)))


@pytest.mark.parametrize("thinking", [True, False])
def test_qwen3_template_equals_its_jinja_rendering(shared, tmp_path, thinking):
    """Qwen3's tokenizer and chat template (detected as qwen3: ChatML with a
    thinking section) give the ids its own jinja template gives, with
    thinking on (the template's default) and off (--no-think: the empty
    <think></think> block it writes into the generation prompt)."""
    tok = tmp_path / "tokenizer.bin"
    export(tok, "--tokenizer", os.path.join(shared, "tokenizers", "qwen3"))
    with open(tok, "rb") as f:
        assert int.from_bytes(f.read(48)[44:48], "little") == 11  # recorded as qwen3
    with open(os.path.join(shared, "testdata", "tokenizer", "chat", "qwen3.json")) as f:
        case = next(c for c in json.load(f) if (c["options"].get("enable_thinking") is not False) == thinking)
    turns = [(m["role"], m["content"]) for m in case["messages"]]
    want = case["ids"]
    if not thinking:
        # The generation prompt ends in <think>\n\n</think>\n\n. run.c feeds that block before every
        # reply and keeps it in the KV cache; the template re-renders earlier replies without it.
        block = want[-4:]
        assert block[0] == 151667 and block[2] == 151668  # <think>, </think>
        first_reply = want.index(151644, want.index(77091) - 1) + 3  # after the first <|im_start|>assistant\n
        want = want[:first_reply] + block + want[first_reply:]
    assert render(tmp_path, tok, "qwen3" if thinking else "qwen3/no-think", turns) == want


def test_no_think_is_refused_for_templates_without_the_switch(tmp_path, smollm2):
    tok, _ = smollm2
    p = subprocess.run([RUN, "-m", "chat", "-z", tok, "--no-think"], capture_output=True, input=b"")
    (tmp_path / "c.bin").write_bytes(b"user\0Hi\0")
    h = subprocess.run([os.path.join(os.path.dirname(RUN), "tests", "harness"), "render", tok, "chatml/no-think",
                        tmp_path / "c.bin"], capture_output=True)
    assert h.returncode == 1 and b"--no-think: the chatml chat template has no switch for thinking" in h.stderr
    assert p.returncode == 1


def test_gemma3_template_equals_its_jinja_rendering(shared, tmp_path):
    """Gemma 3's tokenizer.json and chat template (detected as gemma): <bos>,
    the system prompt folded into the first user turn, <start_of_turn>model
    for the assistant; the ids its own jinja template gives."""
    tok = tmp_path / "tokenizer.bin"
    export(tok, "--tokenizer", os.path.join(shared, "tokenizers", "gemma3"))
    with open(tok, "rb") as f:
        assert int.from_bytes(f.read(48)[44:48], "little") == 8  # recorded as gemma
    with open(os.path.join(shared, "testdata", "tokenizer", "chat", "gemma3.json")) as f:
        case = json.load(f)[0]
    turns = [(m["role"], m["content"]) for m in case["messages"]]
    assert render(tmp_path, tok, "gemma", turns) == case["ids"]


# Phi's published chat templates (Phi-3.5-mini-instruct's and Phi-4-mini-instruct's tokenizer_config.json)
PHI35_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")
PHI4_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and "
    "message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + "
    "message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + message['role'] + '|>' + "
    "message['content'] + '<|end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}")
# Phi-3.5's added tokens (ids and flags as its tokenizer.json has them: the chat tokens strip on the right)
PHI_ADDED = {32000: ("<|endoftext|>", False), 32001: ("<|assistant|>", True), 32006: ("<|system|>", True),
             32007: ("<|end|>", True), 32010: ("<|user|>", True)}


def jinja_ids(template, messages, specials, encode, strftime_now=None, **options):
    """What Hugging Face does: render the template with jinja2, split the text
    at the special tokens (each rstrip one swallowing the whitespace after it),
    and encode each piece between them on its own."""
    if os.environ.get("CI"):
        import jinja2
    else:
        jinja2 = pytest.importorskip("jinja2", reason="python3-jinja2 is not installed")
    import re
    env = jinja2.Environment()
    env.globals["strftime_now"] = strftime_now
    text = env.from_string(template).render(messages=messages, add_generation_prompt=True, eos_token="<|endoftext|>",
                                            **options)
    ids, strip = [], False
    for part in re.split("(" + "|".join(re.escape(s) for s in specials) + ")", text):
        if part in specials:
            ids.append(specials[part][0])
            strip = specials[part][1]
            continue
        part = part.lstrip() if strip else part
        if part:
            ids += encode(part)
            strip = False
    return ids


def phi_tokenizer_dir(tmp_path, source, template, added):
    """A tokenizer directory: `source` (a tokenizer.model or tokenizer.json)
    and a tokenizer_config.json with Phi's added tokens and template."""
    d = tmp_path / "phi"
    d.mkdir()
    shutil.copy(source, d / os.path.basename(source))
    decoder = {str(i): {"content": t, "special": True, "rstrip": rs, "lstrip": False, "normalized": False}
               for i, (t, rs) in added.items()}
    (d / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder, "chat_template": template,
                                                         "eos_token": "<|endoftext|>"}))
    return d


@pytest.mark.parametrize("system", [SYSTEM, ""])
def test_phi3_template_equals_its_jinja_rendering(shared, tmp_path, spm, system):
    """Phi-3.5-mini: the Llama 2 SentencePiece model plus added chat tokens
    (from tokenizer_config.json, with their rstrip flags), no BOS, the system
    turn only when it has text; the role and end tokens swallow the newlines
    after them, as Hugging Face's tokenizer does."""
    d = phi_tokenizer_dir(tmp_path, f"{shared}/tokenizers/llama2/tokenizer.model", PHI35_TEMPLATE, PHI_ADDED)
    p = export(tmp_path / "tok.bin", "--tokenizer", d)
    assert "5 added tokens beside tokenizer.model" in p.stderr
    with open(tmp_path / "tok.bin", "rb") as f:
        head = f.read(64)
    assert int.from_bytes(head[44:48], "little") == 9 and int.from_bytes(head[20:24], "little") == 32000
    specials = {t: (i, rs) for i, (t, rs) in PHI_ADDED.items()}
    conversation = [("system", system), ("user", U1), ("assistant", A1), ("user", U2)]
    want = jinja_ids(PHI35_TEMPLATE, [{"role": r, "content": c} for r, c in conversation], specials, spm)
    assert render(tmp_path, tmp_path / "tok.bin", "phi3", conversation) == want
    assert want[0] == (32006 if system else 32010) and 13 not in want[:3]  # no newline after a chat token


def test_phi4_template_equals_its_jinja_rendering(shared, tmp_path):
    """Phi-4-mini's template (no newlines; roles spelled through the role
    name), here on SmolLM2's byte-level tokenizer with the chat tokens added."""
    tj = json.loads(open(f"{shared}/tokenizers/smollm2/tokenizer.json", encoding="utf-8").read())
    added = {49152 + k: (t, True) for k, t in enumerate(["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"])}
    tj["added_tokens"] += [{"id": i, "content": t, "special": True, "rstrip": rs, "lstrip": False}
                           for i, (t, rs) in added.items()]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    d = phi_tokenizer_dir(tmp_path, tmp_path / "src" / "tokenizer.json", PHI4_TEMPLATE, {})
    export(tmp_path / "tok.bin", "--tokenizer", d / "tokenizer.json")
    with open(tmp_path / "tok.bin", "rb") as f:
        assert int.from_bytes(f.read(48)[44:48], "little") == 10  # recorded as phi4
    enc = ref_bpe.TokenizerJson(f"{shared}/tokenizers/smollm2/tokenizer.json").encode
    specials = {t: (i, rs) for i, (t, rs) in added.items()}
    conversation = [("system", SYSTEM), ("user", " " + U1), ("assistant", A1), ("user", U2)]
    want = jinja_ids(PHI4_TEMPLATE, [{"role": r, "content": c} for r, c in conversation], specials,
                     lambda s: enc(s.encode()))
    assert render(tmp_path, tmp_path / "tok.bin", "phi4", conversation) == want


def smollm3_template():
    """SmolLM3-3B's chat template (its tokenizer_config.json), without the tool sections."""
    long = ("You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an assistant involves "
            "thoroughly exploring questions through a systematic thinking process before providing the final precise "
            "and accurate solutions. This requires engaging in a comprehensive cycle of analysis, summarizing, "
            "exploration, reassessment, reflection, backtracking, and iteration to develop well-considered thinking "
            "process. Please structure your response into two main sections: Thought and Solution using the "
            "specified format: <think> Thought section </think> Solution section. In the Thought section, detail "
            "your reasoning process in steps. Each step should include detailed considerations such as analysing "
            "questions, summarizing relevant findings, brainstorming new ideas, verifying the accuracy of the current "
            "steps, refining any errors, and revisiting previous steps. In the Solution section, based on various "
            "attempts, explorations, and reflections from the Thought section, systematically present the final "
            "solution that you deem correct. The Solution section should be logical, accurate, and concise and "
            "detail necessary steps needed to reach the conclusion.")
    return (
        '{%- if enable_thinking is not defined -%}{%- set enable_thinking = true -%}{%- endif -%}'
        '{%- if enable_thinking -%}{%- set reasoning_mode = "/think" -%}{%- else -%}'
        '{%- set reasoning_mode = "/no_think" -%}{%- endif -%}'
        '{{- "<|im_start|>system\\n" -}}'
        '{%- if messages[0].role == "system" -%}{%- set system_message = messages[0].content -%}'
        '{%- if "/no_think" in system_message -%}{%- set reasoning_mode = "/no_think" -%}'
        '{%- elif "/think" in system_message -%}{%- set reasoning_mode = "/think" -%}{%- endif -%}'
        '{%- set custom_instructions = system_message.replace("/no_think", "").replace("/think", "").rstrip() -%}'
        '{%- endif -%}'
        '{%- if "/system_override" in system_message -%}'
        '{{- custom_instructions.replace("/system_override", "").rstrip() -}}{{- "<|im_end|>\\n" -}}'
        '{%- else -%}{{- "## Metadata\\n\\n" -}}{{- "Knowledge Cutoff Date: June 2025\\n" -}}'
        '{%- set today = strftime_now("%d %B %Y") -%}{{- "Today Date: " ~ today ~ "\\n" -}}'
        '{{- "Reasoning Mode: " + reasoning_mode + "\\n\\n" -}}{{- "## Custom Instructions\\n\\n" -}}'
        '{%- if custom_instructions -%}{{- custom_instructions + "\\n\\n" -}}'
        '{%- elif reasoning_mode == "/think" -%}{{- "' + long + '\\n\\n" -}}'
        '{%- else -%}{{- "You are a helpful AI assistant named SmolLM, trained by Hugging Face.\\n\\n" -}}{%- endif -%}'
        '{%- endif -%}'
        '{%- for message in messages -%}{%- set content = message.content if message.content is string else "" -%}'
        '{%- if message.role == "user" -%}{{ "<|im_start|>" + message.role + "\\n"  + content + "<|im_end|>\\n" }}'
        '{%- elif message.role == "assistant" -%}{%- if reasoning_mode == "/think" -%}'
        '{{ "<|im_start|>assistant\\n" + content.lstrip("\\n") + "<|im_end|>\\n" }}{%- else -%}'
        '{{ "<|im_start|>assistant\\n" + "<think>\\n\\n</think>\\n" + content.lstrip("\\n") + "<|im_end|>\\n" }}'
        '{%- endif -%}{%- endif -%}{%- endfor -%}'
        '{%- if add_generation_prompt -%}{%- if reasoning_mode == "/think" -%}{{ "<|im_start|>assistant\\n" }}'
        '{%- else -%}{{ "<|im_start|>assistant\\n" + "<think>\\n\\n</think>\\n"  }}{%- endif -%}{%- endif -%}')


@pytest.mark.parametrize("system,thinking", [(SYSTEM, True), (SYSTEM, False), (SYSTEM + " /no_think", True),
                                             ("", True), ("", False), ("Only this. /system_override", True)])
def test_smollm3_template_equals_its_jinja_rendering(shared, tmp_path, system, thinking):
    """SmolLM3's template: a metadata block (today's date, the reasoning
    mode) and the custom instructions (the system prompt less /think or
    /no_think, else its default ones) open the conversation; with thinking
    off (--no-think or /no_think) an empty think block opens each reply.
    On SmolLM2's tokenizer with <think> and </think> added, as SmolLM3 has them."""
    import datetime
    tj = json.loads(open(f"{shared}/tokenizers/smollm2/tokenizer.json", encoding="utf-8").read())
    tj["added_tokens"] += [{"id": 49152, "content": "<think>", "special": False},
                           {"id": 49153, "content": "</think>", "special": False}]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    template = smollm3_template()
    (tmp_path / "src" / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    export(tmp_path / "tok.bin", "--tokenizer", tmp_path / "src" / "tokenizer.json")
    with open(tmp_path / "tok.bin", "rb") as f:
        assert int.from_bytes(f.read(48)[44:48], "little") == 12  # recorded as smollm3
    enc = ref_bpe.TokenizerJson(f"{shared}/tokenizers/smollm2/tokenizer.json").encode
    specials = {"<|im_start|>": (1, False), "<|im_end|>": (2, False), "<think>": (49152, False),
                "</think>": (49153, False)}
    turns = [("system", system), ("user", U1), ("assistant", A1), ("user", U2)]
    messages = [{"role": r, "content": c} for r, c in turns]
    for _ in range(2):  # rendered twice if midnight passes between the two
        day = datetime.datetime.now().strftime("%d %B %Y")
        got = render(tmp_path, tmp_path / "tok.bin", "smollm3" if thinking else "smollm3/no-think", turns)
        if datetime.datetime.now().strftime("%d %B %Y") == day:
            break
    want = jinja_ids(template, messages, specials, lambda s: enc(s.encode()),
                     enable_thinking=thinking, strftime_now=lambda fmt: day)
    assert got == want


# Granite 3.3's chat template (granite-3.3-2b-instruct's tokenizer_config.json)
GRANITE_TEMPLATE = (
    "{# Alias tools -> available_tools #}\n{%- if tools and not available_tools -%}\n"
    "    {%- set available_tools = tools -%}\n{%- endif -%}\n{%- if messages[0]['role'] == 'system' %}\n"
    "     {%- set system_message = messages[0]['content'] %}\n     {%- set loop_messages = messages[1:] %}\n"
    " {%- else %}\n     {%- set system_message = \"Knowledge Cutoff Date: April 2024.\\nToday's Date: \" + "
    "strftime_now('%B %d, %Y') + \".\\nYou are Granite, developed by IBM.\" %}\n"
    "     {%- if available_tools and documents %}\n         {%- set system_message = system_message + \" TOOLS+DOCS\" %}\n"
    "     {%- elif available_tools %}\n         {%- set system_message = system_message + \" TOOLS\" %}\n"
    "     {%- elif documents %}\n         {%- set system_message = system_message + \" DOCS\" %}\n"
    "    {%- elif thinking %}\n    {%- set system_message = system_message + \" THINKING\" %}\n"
    "     {%- else %}\n         {%- set system_message = system_message + \" You are a helpful AI assistant.\" %}\n"
    "     {%- endif %}\n     {%- set loop_messages = messages %}\n {%- endif %}\n"
    " {{- '<|start_of_role|>system<|end_of_role|>' + system_message + '<|end_of_text|>\\n' }}\n"
    " {%- for message in loop_messages %}\n"
    "     {{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] + '<|end_of_text|>\\n' }}\n"
    "     {%- if loop.last and add_generation_prompt %}\n         {{- '<|start_of_role|>assistant' }}\n"
    "             {%- if controls %}\n                 {{- ' ' + controls | tojson()}}\n             {%- endif %}\n"
    "         {{- '<|end_of_role|>' }}\n     {%- endif %}\n {%- endfor %}")


@pytest.mark.parametrize("system", [SYSTEM, None])
def test_granite_template_equals_its_jinja_rendering(shared, tmp_path, system):
    """Granite 3.x: <|start_of_role|>role<|end_of_role|>text<|end_of_text|>,
    and without a system prompt the template's own (knowledge cutoff,
    today's date, "You are Granite"). The tool, document and thinking
    branches of the template are shortened here: a chat uses none of them."""
    import datetime
    tj = json.loads(open(f"{shared}/tokenizers/smollm2/tokenizer.json", encoding="utf-8").read())
    names = ["<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>"]
    tj["added_tokens"] += [{"id": 49152 + k, "content": t, "special": True} for k, t in enumerate(names)]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    (tmp_path / "src" / "tokenizer_config.json").write_text(json.dumps({"chat_template": GRANITE_TEMPLATE}))
    export(tmp_path / "tok.bin", "--tokenizer", tmp_path / "src" / "tokenizer.json")
    with open(tmp_path / "tok.bin", "rb") as f:
        assert int.from_bytes(f.read(48)[44:48], "little") == 13  # recorded as granite
    enc = ref_bpe.TokenizerJson(f"{shared}/tokenizers/smollm2/tokenizer.json").encode
    specials = {t: (49152 + k, False) for k, t in enumerate(names)}
    turns = ([("system", system)] if system is not None else []) + [("user", U1), ("assistant", A1), ("user", U2)]
    for _ in range(2):  # rendered twice if midnight passes between the two
        day = datetime.datetime.now().strftime("%B %d, %Y")
        got = render(tmp_path, tmp_path / "tok.bin", "granite", turns)
        if datetime.datetime.now().strftime("%B %d, %Y") == day:
            break
    want = jinja_ids(GRANITE_TEMPLATE, [{"role": r, "content": c} for r, c in turns], specials,
                     lambda s: enc(s.encode()), strftime_now=lambda fmt: day)
    assert got == want
