"""BEATs: parity with the upstream PyTorch fixture, strict conversion, full-size layout, invariances."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from asd_jax.audio import fbank as fb
from asd_jax.checkpoints import converted
from asd_jax.models import beats
from weights_conversion import convert_beats

ATOL = 1e-4


@pytest.fixture(scope="module")
def io(fixtures):
  return dict(np.load(fixtures / "beats_tiny_io.npz"))


@pytest.fixture(scope="module")
def checkpoint(fixtures):
  return torch.load(fixtures / "beats_tiny.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def tiny(fixtures):
  return beats.load(fixtures / "beats_tiny.pt")


def _apply(config, params, fbank, padding_mask=None, dtype=jnp.float32, fused=False):
  model = beats.BEATs(config, dtype=dtype, fused_attention=fused)
  out, state = model.apply({"params": params}, fbank, padding_mask, mutable=["intermediates"])
  return out, state["intermediates"]


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "dot_product_attention"])
def test_reproduces_upstream_from_wav(tiny, io, fused):
  config, params = tiny
  assert config == beats.BEATS_TINY
  features = fb.fbank(io["wav"], fb.BEATS_FBANK)
  np.testing.assert_allclose(features, io["fbank"], rtol=0, atol=ATOL)
  out, inter = _apply(config, params, features, fused=fused)
  np.testing.assert_allclose(inter["patch_tokens"][0], io["patch_tokens"], rtol=0, atol=ATOL)
  np.testing.assert_allclose(inter["encoder"]["encoder_input"][0], io["encoder_input"], rtol=0, atol=ATOL)
  assert len(out.layer_outputs) == 2
  for layer, expected in zip(out.layer_outputs, io["layer_outputs"]):
    np.testing.assert_allclose(layer, expected, rtol=0, atol=ATOL)
  np.testing.assert_allclose(out.features, io["features"], rtol=0, atol=ATOL)
  assert out.token_mask is None and out.num_prefix_tokens == 0


def test_all_false_padding_mask_changes_nothing(tiny, io):
  config, params = tiny
  plain, _ = _apply(config, params, io["fbank"])
  masked, _ = _apply(config, params, io["fbank"], np.zeros(io["fbank"].shape[:2], bool))
  np.testing.assert_allclose(masked.features, plain.features, rtol=0, atol=1e-6)
  assert masked.token_mask.shape == (2, 192) and bool(masked.token_mask.all())


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "dot_product_attention"])
def test_padded_frames_do_not_reach_real_tokens(tiny, io, fused):
  config, params = tiny
  mask = np.zeros((2, 398), bool)
  mask[0, 320:] = True  # time patches 20..23 of clip 0; upstream's rule maps it to tokens 160..191
  other = io["fbank"].copy()
  other[0, 320:] = np.random.default_rng(0).normal(size=other[0, 320:].shape)
  a, _ = _apply(config, params, io["fbank"], mask, fused=fused)
  b, _ = _apply(config, params, other, mask, fused=fused)
  np.testing.assert_array_equal(np.asarray(a.token_mask[0]), np.arange(192) < 160)
  np.testing.assert_allclose(a.features[0, :160], b.features[0, :160], rtol=0, atol=1e-5)
  assert np.abs(np.asarray(a.features[0, :160]) - io["features"][0, :160]).max() > 1e-3  # the mask acts
  np.testing.assert_allclose(a.features[1], io["features"][1], rtol=0, atol=ATOL)  # clip 1 unpadded


def test_relative_position_buckets_hand_computed():
  buckets = beats.relative_position_buckets(1200, 320, 800)
  rel = lambda q, k: buckets[q, k]
  assert rel(7, 7) == 0
  assert rel(0, 5) == 165 and rel(5, 0) == 5  # exact branch, positive rel offset by 160
  assert rel(0, 80) == 240  # log branch starts at 80: 80 + trunc(ln 1 / ...) = 80
  assert rel(0, 191) == 160 + 80 + int(math.log(191 / 80) / math.log(10) * 80)  # 270
  assert rel(1100, 0) == 159 and rel(0, 1100) == 319  # beyond max_distance: last bucket
  assert beats.relative_position_buckets(192, 320, 1280)[0, 191] != rel(0, 191)


def test_conversion_refuses_missing_extra_and_misshaped(checkpoint):
  config = beats.BEATsConfig.from_checkpoint_cfg(checkpoint["cfg"])
  sd = dict(checkpoint["model"])
  missing = {k: v for k, v in sd.items() if k != "encoder.layers.1.self_attn.k_proj.bias"}
  # k_proj.bias cannot change the outputs (softmax removes it), so only the name check can catch it.
  with pytest.raises(converted.CheckpointError,
                     match=r"missing 1 key\(s\): encoder.layers.1.self_attn.k_proj.bias"):
    beats.convert_state_dict(missing, config)
  with pytest.raises(converted.CheckpointError, match=r"unexpected 1 key\(s\): encoder.extra.weight"):
    beats.convert_state_dict({**sd, "encoder.extra.weight": torch.zeros(3)}, config)
  reshaped = {**sd, "encoder.layers.0.fc1.weight": sd["encoder.layers.0.fc1.weight"].T}
  with pytest.raises(converted.CheckpointError,
                     match=r"encoder.layers.0.fc1.weight: expected shape \(128, 64\), found \(64, 128\)"):
    beats.convert_state_dict(reshaped, config)
  key = "encoder.layers.1.self_attn.relative_attention_bias.weight"
  with pytest.raises(converted.CheckpointError, match="relative_attention_bias is shared"):
    beats.convert_state_dict({**sd, key: sd[key] + 1.0}, config)
  with pytest.raises(converted.CheckpointError, match="predictor.weight"):
    beats.convert_state_dict(sd, dataclasses.replace(config, finetuned_model=True))


def test_config_from_checkpoint_uses_upstream_defaults_for_absent_keys(checkpoint):
  cfg = {k: v for k, v in checkpoint["cfg"].items() if k != "max_distance"}
  assert beats.BEATsConfig.from_checkpoint_cfg(cfg).max_distance == 1280
  assert beats.BEATsConfig.from_checkpoint_cfg(checkpoint["cfg"]).max_distance == 800


def test_full_size_layout_matches_released_model(fixtures):
  reference = json.loads((fixtures / "beats_full_keys.json").read_text())
  config = beats.BEATsConfig.from_checkpoint_cfg(reference["cfg"])
  assert config == beats.BEATS_ITER3_PLUS
  assert beats.expected_state_dict_shapes(config) == {e["key"]: tuple(e["shape"]) for e in reference["keys"]}
  shapes = beats.param_shapes(config)  # eval_shape: nothing allocated
  assert converted.count_params(shapes) == reference["unique_parameter_count"] == 90_311_792
  paths = converted.flatten_params(shapes)
  for name in ("q_proj", "k_proj", "v_proj", "out_proj"):  # LoRA selects these by path
    assert paths[f"encoder/layers_11/self_attn/{name}/kernel"].shape == (768, 768)
  tables = [p for p in paths if "relative_attention_bias" in p]
  assert tables == ["encoder/layers_0/self_attn/relative_attention_bias/embedding"]  # shared, stored once


def test_jit_and_batch_invariance(tiny, io):
  config, params = tiny
  model = beats.BEATs(config)
  jitted = jax.jit(lambda p, x: model.apply({"params": p}, x).features)(params, io["fbank"])
  with jax.disable_jit():
    eager = model.apply({"params": params}, io["fbank"][:1]).features
  single = model.apply({"params": params}, io["fbank"][1:]).features
  np.testing.assert_allclose(eager, jitted[:1], rtol=0, atol=1e-5)
  np.testing.assert_allclose(single, jitted[1:], rtol=0, atol=1e-5)


def test_bfloat16_compute_close_to_float32(tiny, io):
  config, params = tiny
  out, _ = _apply(config, params, io["fbank"], dtype=jnp.bfloat16)
  assert out.features.dtype == jnp.bfloat16
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
  err = np.abs(np.asarray(out.features, np.float32) - io["features"])
  # Outputs are LayerNorm-ed (O(1)); bf16 has an 8-bit mantissa.
  assert err.mean() < 0.015 and err.max() < 0.1, (err.mean(), err.max())  # measured 0.0054, 0.047


def test_train_mode_layerdrop_and_gradient_decay(tiny, io):
  config, params = tiny
  dropall = beats.BEATs(dataclasses.replace(config, encoder_layerdrop=1.0))
  out, state = dropall.apply({"params": params}, io["fbank"], train=True, rngs={"dropout": jax.random.key(0)},
                             mutable=["intermediates"])
  encoder_input = state["intermediates"]["encoder"]["encoder_input"][0]
  for layer in out.layer_outputs:  # every layer skipped
    np.testing.assert_array_equal(layer, encoder_input)
  grad = jax.grad(lambda x: jnp.sum(beats._scale_gradient(x, 0.6) * 3.0))(jnp.ones(4))
  np.testing.assert_allclose(grad, 1.8, rtol=1e-6)
  with pytest.raises(Exception, match="dropout"):  # train mode needs the 'dropout' rng
    beats.BEATs(config).apply({"params": params}, io["fbank"], train=True)


def test_finetuned_predictor_is_kept_and_applied(checkpoint, io):
  config = dataclasses.replace(beats.BEATsConfig.from_checkpoint_cfg(checkpoint["cfg"]), finetuned_model=True,
                               predictor_class=5)
  rng = np.random.default_rng(0)
  weight, bias = rng.normal(size=(5, 64)).astype(np.float32), rng.normal(size=5).astype(np.float32)
  params = beats.convert_state_dict({**checkpoint["model"], "predictor.weight": weight, "predictor.bias": bias},
                                    config)
  out, inter = _apply(config, params, io["fbank"])
  expected = 1 / (1 + np.exp(-(io["features"] @ weight.T + bias).mean(axis=1)))
  np.testing.assert_allclose(inter["audioset_probs"][0], expected, rtol=0, atol=1e-4)


def test_converter_cli_round_trip(tmp_path, fixtures, tiny, io):
  summary = convert_beats.convert(str(fixtures / "beats_tiny.pt"), str(tmp_path / "beats"))
  assert "2 layers" in summary and "111,960 parameters" in summary
  config, params = beats.load(tmp_path / "beats")
  assert config == tiny[0]
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, tiny[1])
  with pytest.raises(converted.CheckpointError, match="expected 'eat'|holds a 'beats' model"):
    converted.restore_converted(tmp_path / "beats", "eat")


@pytest.mark.parametrize("changes", [dict(relative_position_embedding=False),
                                     dict(gru_rel_pos=False, deep_norm=False, layer_norm_first=True),
                                     dict(embed_dim=64, conv_bias=True)], ids=["no_rel_pos", "pre_ln", "no_proj"])
def test_other_configs_have_upstream_key_layout(changes):
  config = dataclasses.replace(beats.BEATS_TINY, **changes)
  shapes = beats.expected_state_dict_shapes(config)
  rng = np.random.default_rng(0)
  state_dict = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  if config.relative_position_embedding:
    tables = [k for k in state_dict if "relative_attention_bias" in k]
    state_dict.update({k: state_dict[tables[0]] for k in tables})
  params = beats.convert_state_dict(state_dict, config)  # also checks the tree against the module's
  out = beats.BEATs(config).apply({"params": params}, np.zeros((1, 32, 128), np.float32))
  assert out.features.shape == (1, 16, 64) and np.isfinite(np.asarray(out.features)).all()
