"""config.json as transformers writes it today: rope_parameters (flat and per
layer type) beside the older rope_theta / rope_scaling, each family's
defaults for absent keys (said by export), refusals that name the key and
value, and multimodal wrappers whose language model sits under text_config."""

import json

import numpy as np
import pytest

import hf
import reference
from conftest import export, logits
from test_families import FAMILIES

import struct


def rope_header(path):
    """rope_theta, factor, low, high, original context from the model file's header"""
    with open(path, "rb") as f:
        h = f.read(64)
    return struct.unpack("<4fi", h[40:60])


def write(tmp_path, name, config, weights, drop=()):
    """A checkpoint whose config.json is `config` less the keys in drop."""
    d = tmp_path / name
    hf.write_checkpoint(d, config, weights)
    cfg = json.loads((d / "config.json").read_text())
    for key in drop:
        cfg.pop(key, None)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def new_form(config, per_layer_type=False):
    """config with rope_theta / rope_scaling moved into rope_parameters (transformers v5)."""
    new = {k: v for k, v in config.items() if k not in ("rope_theta", "rope_scaling")}
    params = {"rope_type": "default", "rope_theta": config.get("rope_theta", 10000.0)}
    if config.get("rope_scaling"):
        params = {**config["rope_scaling"], "rope_theta": params["rope_theta"]}
    new["rope_parameters"] = {"full_attention": params} if per_layer_type else params
    if per_layer_type:
        new["layer_types"] = ["full_attention"] * config["num_hidden_layers"]
    return new


@pytest.mark.parametrize("family", ["llama3.2", "qwen2.5", "tinyllama"])
def test_rope_parameters_export_the_same_file_as_the_old_keys(tmp_path, family):
    config = FAMILIES[family]
    weights = hf.random_llama(config, seed=9)
    old = write(tmp_path, "old", config, weights)
    export(tmp_path / "old.bin", "--hf", old)
    for form, per_layer in (("flat", False), ("per_layer_type", True)):
        d = write(tmp_path, form, new_form(config, per_layer), weights, drop=("rope_theta", "rope_scaling"))
        p = export(tmp_path / f"{form}.bin", "--hf", d)
        assert "rope_theta" not in p.stderr  # no default applied: it came from rope_parameters
        assert (tmp_path / f"{form}.bin").read_bytes() == (tmp_path / "old.bin").read_bytes(), form
    tokens = list(np.random.default_rng(0).integers(0, config["vocab_size"], 30))
    want = reference.forward(config, weights, tokens)
    assert np.max(np.abs(logits(tmp_path / "flat.bin", tokens) - want)) < 1e-4


def test_both_forms_that_agree_are_accepted(tmp_path):
    config = FAMILIES["llama3.2"]
    d = write(tmp_path, "both", {**new_form(config), "rope_theta": config["rope_theta"],
                                 "rope_scaling": config["rope_scaling"]}, hf.random_llama(config, 1))
    export(tmp_path / "m.bin", "--hf", d)
    assert rope_header(tmp_path / "m.bin")[:2] == (500000.0, 32.0)


@pytest.mark.parametrize("change,message", [
    ({"rope_theta": 10000.0}, "rope_theta 10000.0 and rope_parameters' rope_theta 500000.0 disagree"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 32}}, "rope_scaling"),
])
def test_forms_that_disagree_are_refused(tmp_path, change, message):
    config = FAMILIES["llama3.2"]
    d = write(tmp_path, "m", {**new_form(config), **change}, hf.random_llama(config, 1))
    p = export(tmp_path / "m.bin", "--hf", d, check=False)
    assert p.returncode == 1 and message in p.stderr and "disagree" in p.stderr


@pytest.mark.parametrize("model_type,theta", [("llama", 10000.0), ("mistral", 10000.0), ("qwen2", 10000.0)])
def test_absent_keys_take_the_family_defaults_and_say_so(tmp_path, model_type, theta):
    config = {**FAMILIES["tinyllama"], "model_type": model_type, "num_key_value_heads": 8}  # MHA: the default
    d = write(tmp_path, "m", config, hf.random_llama(config, 2),
              drop=("rope_theta", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings", "hidden_act",
                    "num_key_value_heads", "sliding_window"))
    p = export(tmp_path / "m.bin", "--hf", d)
    for key in ("rope_theta", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings", "hidden_act",
                "num_key_value_heads"):
        assert f"config.json has no {key}" in p.stderr, key
    assert rope_header(tmp_path / "m.bin")[0] == theta
    with open(tmp_path / "m.bin", "rb") as f:
        h = f.read(116)
    n_kv, seq_len = struct.unpack("<i", h[24:28])[0], struct.unpack("<i", h[36:40])[0]
    eps, window = struct.unpack("<f", h[60:64])[0], struct.unpack("<i", h[112:116])[0]
    assert n_kv == config["num_attention_heads"] and eps == pytest.approx(1e-6)
    assert seq_len == {"llama": 2048, "mistral": 131072, "qwen2": 32768}[model_type]
    assert window == (4096 if model_type == "mistral" else 0)  # MistralConfig's default window


def test_rope_parameters_without_theta_take_the_default_and_say_so(tmp_path):
    config = FAMILIES["tinyllama"]
    d = write(tmp_path, "m", {**config, "rope_parameters": {"rope_type": "default"}}, hf.random_llama(config, 2),
              drop=("rope_theta",))
    p = export(tmp_path / "m.bin", "--hf", d)
    assert "config.json has no rope_theta: using llama's default 10000.0" in p.stderr


@pytest.mark.parametrize("change,message", [
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                          "original_max_position_embeddings": 32768}}, "rope_type 'yarn' is not implemented"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}, "rope_type 'dynamic' is not"),
    ({"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}},
     "longrope rope scaling needs original_max_position_embeddings"),
    ({"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]},
      "original_max_position_embeddings": 64}, "longrope has 1 factors, expected 8"),
    ({"rope_parameters": {"rope_type": "spiral", "rope_theta": 1e4}}, "unknown rope_type 'spiral'"),
    ({"hidden_act": "relu2"}, "hidden_act 'relu2' is not supported"),
    ({"model_type": "falcon"}, "model_type 'falcon' is not supported"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
      "layer_types": ["sliding_attention", "full_attention"]}, "local and global layers (layer_types) are not supported by llama"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
])
def test_unknown_or_unsupported_values_are_refused_by_name(tmp_path, change, message):
    config = FAMILIES["tinyllama"]
    d = write(tmp_path, "m", {**config, **change}, hf.random_llama(config, 2))
    p = export(tmp_path / "m.bin", "--hf", d, check=False)
    assert p.returncode == 1 and message in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1 or "note:" in p.stderr


def export_wrapper(tmp_path, wrapper, stored):
    """Exports a multimodal checkpoint: its config.json and its F32 tensors."""
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(wrapper))
    hf.write_safetensors(d / "model.safetensors", stored, "F32")
    return export(tmp_path / "m.bin", "--hf", d)


@pytest.mark.parametrize("prefix,head", [("model.language_model.", "lm_head.weight"),
                                         ("language_model.model.", "language_model.lm_head.weight")])
def test_multimodal_wrapper_exports_its_language_model(tmp_path, prefix, head):
    """A Llava-style checkpoint: the language model's config under text_config,
    its tensors under a language_model prefix (both namings transformers has
    used), a vision tower beside them that is skipped."""
    config = FAMILIES["llama3.2"]
    config = {**config, "tie_word_embeddings": False}
    weights = hf.random_llama(config, seed=4)
    stored = {}
    for name, a in weights.items():
        if name == "lm_head.weight":
            stored[head] = a
        else:
            stored[prefix + name[len("model."):]] = a
    rng = np.random.default_rng(0)
    stored["model.vision_tower.patch_embedding.weight"] = rng.normal(size=(8, 3, 4, 4)).astype(np.float32)
    stored["model.multi_modal_projector.linear_1.weight"] = rng.normal(size=(128, 8)).astype(np.float32)
    wrapper = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
               "text_config": {**new_form(config), "model_type": "llama"},
               "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 8}}
    p = export_wrapper(tmp_path, wrapper, stored)
    assert "LlavaForConditionalGeneration is a multimodal wrapper" in p.stderr and "2 other tensors" in p.stderr
    tokens = list(np.random.default_rng(1).integers(0, config["vocab_size"], 30))
    want = reference.forward(config, weights, tokens)
    assert np.max(np.abs(logits(tmp_path / "m.bin", tokens) - want)) < 1e-4


def gemma3_new_form(config):
    """Gemma 3's config as transformers v5 writes it: RoPE per layer type."""
    new = {k: v for k, v in config.items() if k not in ("rope_theta", "rope_scaling", "rope_local_base_freq")}
    full = {"rope_type": "default", "rope_theta": config["rope_theta"]}
    if config.get("rope_scaling"):
        full = {**config["rope_scaling"], "rope_theta": config["rope_theta"]}
    new["rope_parameters"] = {"full_attention": full, "sliding_attention": {
        "rope_type": "default", "rope_theta": config["rope_local_base_freq"]}}
    return new


def test_gemma3_rope_parameters_per_layer_type_export_the_same_file(tmp_path):
    """Gemma 3 4B's RoPE (global: theta 1e6, linear factor 8; local: theta
    1e4) in the old keys and per layer type give the same model file."""
    config = FAMILIES["gemma3-4b"]
    weights = hf.random_llama(config, seed=3)
    export(tmp_path / "old.bin", "--hf", write(tmp_path, "old", config, weights))
    d = write(tmp_path, "new", gemma3_new_form(config), weights, drop=("rope_theta", "rope_scaling"))
    p = export(tmp_path / "new.bin", "--hf", d)
    assert "no rope" not in p.stderr  # nothing defaulted
    assert (tmp_path / "new.bin").read_bytes() == (tmp_path / "old.bin").read_bytes()
    with open(tmp_path / "new.bin", "rb") as f:
        h = f.read(152)
    assert struct.unpack("<f", h[40:44])[0] == 1e6 and struct.unpack("<2f", h[132:140]) == (1e4, 8.0)


def test_gemma3_defaults_are_gemma3s_and_said(tmp_path):
    """Gemma3TextConfig's defaults, not Llama's: rope_theta 1e6, local base
    1e4, eps 1e-6, GELU-tanh, tied, query_pre_attn_scalar 256, a local window
    in five layers of six."""
    config = {**FAMILIES["gemma3"], "head_dim": 256, "query_pre_attn_scalar": 256}
    keys = ("rope_theta", "rope_local_base_freq", "rms_norm_eps", "hidden_activation", "query_pre_attn_scalar",
            "sliding_window_pattern", "max_position_embeddings")
    weights = hf.random_llama(config, seed=1)
    d = write(tmp_path, "m", config, weights, drop=keys)
    p = export(tmp_path / "m.bin", "--hf", d)
    for key in keys:
        assert f"config.json has no {key}: using gemma3_text's default" in p.stderr, key
    tokens = list(np.random.default_rng(0).integers(0, config["vocab_size"], 16))
    want = reference.forward({**config, "max_position_embeddings": 131072}, weights, tokens)
    assert np.max(np.abs(logits(tmp_path / "m.bin", tokens) - want)) < 1e-4


@pytest.mark.parametrize("change,message", [
    ({"rope_local_base_freq": 20000.0}, "rope_local_base_freq 20000.0 and rope_parameters' sliding_attention "
                                        "rope_theta 10000.0 disagree"),
    ({"hidden_activation": "gelu"}, "hidden_activation 'gelu' is not supported for gemma3_text"),
    ({"layer_types": ["sliding_attention"] * 6 + ["chunked_attention"]}, "layer_types must list"),
])
def test_gemma3_refusals_name_the_key(tmp_path, change, message):
    config = FAMILIES["gemma3"]
    d = write(tmp_path, "m", {**gemma3_new_form(config), **change}, hf.random_llama(config, 1),
              drop=("rope_theta",))
    p = export(tmp_path / "m.bin", "--hf", d, check=False)
    assert p.returncode == 1 and message in p.stderr, p.stderr


def test_gemma3_multimodal_wrapper_exports_its_text_model(tmp_path):
    """Gemma3ForConditionalGeneration (4B and up): config.json of model_type
    gemma3 with the text model's config under text_config (which leaves out
    what Gemma3TextConfig defaults), tensors under language_model.model.,
    a vision tower that is skipped."""
    config = FAMILIES["gemma3-4b"]
    weights = hf.random_llama(config, seed=8)
    stored = {"language_model." + name: a for name, a in weights.items()}
    stored["vision_tower.vision_model.embeddings.patch_embedding.weight"] = np.ones((4, 3, 2, 2), np.float32)
    stored["multi_modal_projector.mm_input_projection_weight"] = np.ones((8, 64), np.float32)
    text = {k: v for k, v in gemma3_new_form(config).items() if k not in ("rms_norm_eps", "vocab_size")}
    wrapper = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
               "text_config": {**text, "vocab_size": config["vocab_size"]},
               "vision_config": {"model_type": "siglip_vision_model"}}
    p = export_wrapper(tmp_path, wrapper, stored)
    assert "Gemma3ForConditionalGeneration is a multimodal wrapper" in p.stderr and "2 other tensors" in p.stderr
    assert "config.json has no rms_norm_eps: using gemma3_text's default 1e-06" in p.stderr
    tokens = list(np.random.default_rng(1).integers(0, config["vocab_size"], 20))
    want = reference.forward(config, weights, tokens)
    assert np.max(np.abs(logits(tmp_path / "m.bin", tokens) - want)) < 1e-4
