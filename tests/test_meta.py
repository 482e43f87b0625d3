"""Meta's consolidated.*.pth checkpoints, written with torch by the tests and
read by export.py without it."""

import json
import os

import numpy as np
import pytest

import hf
import reference
from conftest import export, logits
from gguf_writer import llama_cpp_permute
from test_families import FAMILIES

if os.environ.get("CI"):
    import torch  # CI installs python3-torch: this test must run there
else:
    torch = pytest.importorskip("torch", reason="python3-torch is not installed")


def meta_state(config, w):
    """Hugging Face weights under Meta's names, q and k rows back in Meta's order."""
    nh = config["num_attention_heads"]
    nkv = config.get("num_key_value_heads") or nh
    out = {"tok_embeddings.weight": w["model.embed_tokens.weight"], "norm.weight": w["model.norm.weight"]}
    if "lm_head.weight" in w:
        out["output.weight"] = w["lm_head.weight"]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({f"layers.{i}.attention.wq.weight": llama_cpp_permute(w[p + "self_attn.q_proj.weight"], nh),
                    f"layers.{i}.attention.wk.weight": llama_cpp_permute(w[p + "self_attn.k_proj.weight"], nkv),
                    f"layers.{i}.attention.wv.weight": w[p + "self_attn.v_proj.weight"],
                    f"layers.{i}.attention.wo.weight": w[p + "self_attn.o_proj.weight"],
                    f"layers.{i}.feed_forward.w1.weight": w[p + "mlp.gate_proj.weight"],
                    f"layers.{i}.feed_forward.w2.weight": w[p + "mlp.down_proj.weight"],
                    f"layers.{i}.feed_forward.w3.weight": w[p + "mlp.up_proj.weight"],
                    f"layers.{i}.attention_norm.weight": w[p + "input_layernorm.weight"],
                    f"layers.{i}.ffn_norm.weight": w[p + "post_attention_layernorm.weight"]})
    out["rope.freqs"] = np.zeros(4, dtype=np.float32)  # Meta's files carry it; unused
    return out


def shard(state, n, embedding_axis):
    """Split as Meta's model-parallel ranks hold it."""
    shards = [dict() for _ in range(n)]
    for name, a in state.items():
        if a.ndim == 1:
            parts = [a] * n
        elif name == "tok_embeddings.weight":
            parts = np.split(a, n, axis=embedding_axis)
        else:
            parts = np.split(a, n, axis=1 if name.endswith(("wo.weight", "w2.weight")) else 0)
        for s, part in zip(shards, parts):
            s[name] = part
    return shards


@pytest.mark.parametrize("shards,dtype,embedding_axis", [(1, torch.bfloat16, 1), (2, torch.float16, 1),
                                                         (2, torch.bfloat16, 0)])
def test_meta_checkpoint_matches_reference(tmp_path, shards, dtype, embedding_axis):
    config = {**FAMILIES["tinyllama"], "num_key_value_heads": 2}
    weights = hf.random_llama(config, seed=11)
    state = meta_state(config, weights)
    # the values as stored in dtype, for the reference
    stored = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype).float().numpy() for k, v in weights.items()}
    for k, part in enumerate(shard(state, shards, embedding_axis)):
        torch.save({n: torch.from_numpy(np.ascontiguousarray(a)).to(dtype) for n, a in part.items()},
                   tmp_path / f"consolidated.{k:02d}.pth")
    params = {"dim": config["hidden_size"], "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "vocab_size": -1,
              "multiple_of": 32, "norm_eps": 1e-5, "rope_theta": 10000.0}
    (tmp_path / "params.json").write_text(json.dumps(params))
    export(tmp_path / "m.bin", "--meta-llama", tmp_path)
    tokens = list(np.random.default_rng(0).integers(0, config["vocab_size"], 30))
    want = reference.forward(config, stored, tokens)
    assert np.max(np.abs(logits(tmp_path / "m.bin", tokens) - want)) < 1e-4


def test_unpickler_refuses_other_objects(tmp_path):
    torch.save({"x": torch.zeros(2), "evil": os.getcwd}, tmp_path / "consolidated.00.pth")
    (tmp_path / "params.json").write_text(json.dumps({"dim": 8, "n_layers": 1, "n_heads": 2}))
    p = export(tmp_path / "m.bin", "--meta-llama", tmp_path, check=False)
    assert p.returncode == 1 and "not allowed" in p.stderr
