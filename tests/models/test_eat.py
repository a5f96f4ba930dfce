"""EAT encoder: parity with the upstream PyTorch fixture from both checkpoint forms, strict loading,
released-model layouts and parameter counts, precision, jit/batch invariance, padding and dropout."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.checkpoints import converted
from asd_jax.models import eat
from asd_jax.models.encoder_output import POOL_CLS, POOL_MEAN

ATOL = 1e-4  # float32 reimplementation vs the upstream float32 run (README: ~2e-6 is reachable)


@pytest.fixture(scope="module")
def io(fixtures):
  return dict(np.load(fixtures / "eat_tiny_io.npz"))


@pytest.fixture(scope="module")
def fairseq_checkpoint(fixtures):
  torch = pytest.importorskip("torch")
  return torch.load(fixtures / "eat_tiny.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def hf_tensors(fixtures):
  from safetensors.numpy import load_file
  return load_file(str(fixtures / "eat_tiny.safetensors"))


@pytest.fixture(scope="module")
def tiny(fixtures):
  """(config, params) read from the fairseq form."""
  config, params, _ = eat.load_fairseq_checkpoint(fixtures / "eat_tiny.pt")
  return config, params


def test_fbank_from_wav_matches_the_fixture(io):
  """EAT's front end (hanning window, log-mel padded to target_length before normalising) on the raw wav."""
  import dataclasses
  from asd_jax.audio import fbank as fbank_lib
  features = fbank_lib.fbank(jnp.asarray(io["wav"]), dataclasses.replace(fbank_lib.EAT_FBANK, target_length=400))
  np.testing.assert_allclose(features, io["fbank"], atol=1e-4, rtol=0)
  np.testing.assert_allclose(features[:, 398:], (0.0 + 4.268) / (2 * 4.569), atol=1e-6)  # padded frames


def test_wav_to_tokens(tiny, io):
  """End to end: wav -> EAT fbank -> encoder reproduces the upstream features."""
  import dataclasses
  from asd_jax.audio import fbank as fbank_lib
  config, params = tiny
  features = fbank_lib.fbank(jnp.asarray(io["wav"]), dataclasses.replace(fbank_lib.EAT_FBANK, target_length=400))
  out = eat.EAT(config).apply({"params": params}, features)
  np.testing.assert_allclose(out.features, io["features"], atol=1e-3, rtol=0)


def _run(config, params, fbank, dtype=jnp.float32, **kwargs):
  out, state = eat.EAT(config, dtype=dtype).apply({"params": params}, fbank, mutable=["intermediates"], **kwargs)
  return out, state["intermediates"]


# --- parity with the fixture ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["fairseq", "hf"])
def test_reproduces_upstream_tensors(form, fixtures, io):
  if form == "fairseq":
    config, params, _ = eat.load_fairseq_checkpoint(fixtures / "eat_tiny.pt")
  else:
    config, params = eat.load_hf_checkpoint(fixtures / "eat_tiny.safetensors", fixtures / "eat_tiny_hf_config.json")
  out, inter = _run(config, params, io["fbank"])
  np.testing.assert_allclose(inter["patch_tokens"][0], io["patch_tokens"], atol=ATOL, rtol=0)
  np.testing.assert_allclose(inter["encoder_input"][0], io["encoder_input"], atol=ATOL, rtol=0)
  assert len(out.layer_outputs) == config.depth == 2
  for i in range(config.depth):
    np.testing.assert_allclose(out.layer_outputs[i], io["layer_outputs"][i], atol=ATOL, rtol=0)
    np.testing.assert_allclose(inter["ffn_outputs"][i], io["layer_ffn_outputs"][i], atol=ATOL, rtol=0)
  np.testing.assert_allclose(eat.utterance_embedding(out, POOL_CLS), io["features"][:, 0], atol=ATOL, rtol=0)
  np.testing.assert_allclose(out.features[:, 1:], io["features"][:, 1:], atol=ATOL, rtol=0)
  assert out.num_prefix_tokens == 1 and out.token_mask is None


def test_both_forms_give_identical_params_and_config(fixtures, tiny):
  config, params = tiny
  hf_config, hf_params = eat.load_hf_checkpoint(fixtures / "eat_tiny.safetensors",
                                                fixtures / "eat_tiny_hf_config.json")
  assert hf_config == config
  assert jax.tree.structure(hf_params) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, hf_params, params)


def test_converted_tree_matches_the_module(tiny, io):
  config, params = tiny
  shapes = jax.eval_shape(eat.EAT(config).init, jax.random.key(0), io["fbank"])["params"]
  assert jax.tree.structure(shapes) == jax.tree.structure(params)
  assert jax.tree.leaves(jax.tree.map(lambda s, p: s.shape == p.shape, shapes, params)) == [True] * len(
      jax.tree.leaves(params))
  # LoRA targets the same names as BEATs.
  assert set(params["blocks_0"]["attn"]) == {"q_proj", "k_proj", "v_proj", "out_proj"}


def test_qkv_split_and_student_weights(tiny, fairseq_checkpoint):
  """q/k/v come from rows 0:D, D:2D, 2D:3D of the fused weight; the student is read, not the EMA teacher."""
  config, params = tiny
  model = fairseq_checkpoint["model"]
  d = config.embed_dim
  qkv = model["blocks.1.attn.qkv.weight"].numpy()
  for j, name in enumerate(["q_proj", "k_proj", "v_proj"]):
    np.testing.assert_array_equal(params["blocks_1"]["attn"][name]["kernel"], qkv[j * d:(j + 1) * d].T)
  np.testing.assert_array_equal(params["blocks_1"]["attn"]["k_proj"]["bias"],
                                model["blocks.1.attn.qkv.bias"].numpy()[d:2 * d])
  teacher = model["_ema"]["modality_encoders.IMAGE.extra_tokens"].numpy()
  assert not np.allclose(params["cls_token"], teacher)
  np.testing.assert_array_equal(params["cls_token"], model["modality_encoders.IMAGE.extra_tokens"].numpy())


def test_ignored_entries_are_the_decoder_and_teacher(fixtures):
  _, _, ignored = eat.load_fairseq_checkpoint(fixtures / "eat_tiny.pt")
  assert "_ema" in ignored
  assert all(k == "_ema" or k.startswith("modality_encoders.IMAGE.decoder.") for k in ignored)
  assert len(ignored) == 1 + 6 * 2 + 2  # 6 conv blocks (weight, bias) + proj (weight, bias)


def test_converter_cli_round_trip(fixtures, tiny, io, tmp_path):
  """The CLI writes an Orbax directory that `load` restores (no PyTorch needed) to the same params."""
  from weights_conversion import convert_eat
  config, params = tiny
  summary = convert_eat.convert(str(fixtures / "eat_tiny.pt"), str(tmp_path / "eat_tiny"))
  assert "2 blocks, width 64, 4 heads" in summary and "6144 rows" in summary
  assert f"{converted.count_params(params):,} parameters" in summary
  assert "14 decoder tensors" in summary and "_ema (EMA teacher)" in summary
  restored_config, restored = eat.load(tmp_path / "eat_tiny")
  assert restored_config == config
  jax.tree.map(np.testing.assert_array_equal, restored, params)
  # The HF form through the same entry point: a folder with model.safetensors and config.json.
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  (hf_dir / "model.safetensors").symlink_to(fixtures / "eat_tiny.safetensors")
  (hf_dir / "config.json").symlink_to(fixtures / "eat_tiny_hf_config.json")
  hf_config, hf_params = eat.load(hf_dir)
  assert hf_config == config
  jax.tree.map(np.testing.assert_array_equal, hf_params, params)
  with pytest.raises(eat.CheckpointError, match="not an EAT checkpoint"):
    eat.load(tmp_path)


def test_load_refuses_a_converted_directory_of_another_shape(tiny, tmp_path):
  import dataclasses
  config, params = tiny
  eat.save_converted(tmp_path / "bad", dataclasses.replace(config, depth=3), params)
  with pytest.raises(eat.CheckpointError) as err:
    eat.load(tmp_path / "bad")
  assert "blocks_2/attn/q_proj/kernel" in err.value.missing


# --- strict loading -----------------------------------------------------------------------------------------


def _corruptions(state_dict, key, extra_key):
  dropped = {k: v for k, v in state_dict.items() if k != key}
  extra = dict(state_dict, **{extra_key: state_dict[key]})
  reshaped = dict(state_dict)
  reshaped[key] = state_dict[key].reshape(1, -1)
  return {"missing": dropped, "unexpected": extra, "mis-shaped": reshaped}


def _listed(error: eat.CheckpointError) -> dict[str, list[str]]:
  return {"missing": error.missing, "unexpected": error.unexpected,
          "mis-shaped": [key for key, _, _ in error.misshaped]}


@pytest.mark.parametrize("problem", ["missing", "unexpected", "mis-shaped"])
def test_fairseq_refuses_bad_state_dicts(problem, tiny, fairseq_checkpoint):
  config, _ = tiny
  key = "blocks.1.attn.qkv.bias"
  bad = _corruptions(fairseq_checkpoint["model"], key, "blocks.1.attn.extra.bias")[problem]
  with pytest.raises(eat.CheckpointError) as err:
    eat.convert_fairseq_state_dict(bad, config, source="eat_tiny.pt")
  named = "blocks.1.attn.extra.bias" if problem == "unexpected" else key
  assert {k: v for k, v in _listed(err.value).items() if v} == {problem: [named]}
  assert named in str(err.value) and "eat_tiny.pt" in str(err.value)


@pytest.mark.parametrize("problem", ["missing", "unexpected", "mis-shaped"])
def test_hf_refuses_bad_state_dicts(problem, tiny, hf_tensors):
  config, _ = tiny
  key = "model.pre_norm.weight"
  bad = _corruptions(hf_tensors, key, "model.norm.weight")[problem]
  with pytest.raises(eat.CheckpointError) as err:
    eat.convert_hf_state_dict(bad, config)
  named = "model.norm.weight" if problem == "unexpected" else key
  assert {k: v for k, v in _listed(err.value).items() if v} == {problem: [named]}


def test_refuses_a_config_that_does_not_match_the_tensors(tiny, hf_tensors):
  config, _ = tiny
  import dataclasses
  with pytest.raises(eat.CheckpointError) as err:
    eat.convert_hf_state_dict(hf_tensors, dataclasses.replace(config, depth=3))
  assert "model.blocks.2.attn.qkv.weight" in err.value.missing and not err.value.unexpected
  with pytest.raises(eat.CheckpointError) as err:
    eat.convert_hf_state_dict(hf_tensors, dataclasses.replace(config, max_positions=512))
  assert err.value.misshaped == [("model.fixed_positional_encoder.positions", (1, 512, 64), (1, 6144, 64))]


def test_refuses_unsupported_fairseq_settings(fairseq_checkpoint):
  import copy
  cfg = copy.deepcopy(fairseq_checkpoint["cfg"])
  cfg["model"]["layer_norm_first"] = True
  cfg["model"]["modalities"]["image"]["use_alibi_encoder"] = True
  with pytest.raises(ValueError, match="layer_norm_first=True.*use_alibi_encoder=True"):
    eat.EATConfig.from_fairseq_cfg(cfg)


# --- released models: layouts and sizes ---------------------------------------------------------------------


@pytest.mark.parametrize("name, preset", [("eat_base_keys.json", eat.EAT_BASE), ("eat_large_keys.json", eat.EAT_LARGE)])
def test_released_layouts_and_parameter_counts(name, preset, fixtures):
  layout = json.loads((fixtures / name).read_text())
  config = eat.EATConfig.from_fairseq_cfg(layout["cfg_model"])
  assert config == preset
  # The converter expects exactly the released encoder keys and shapes, in both forms.
  fairseq = {e["key"]: tuple(e["shape"]) for e in layout["fairseq_model_keys"]
             if not e["key"].startswith(eat.FAIRSEQ_IGNORED_PREFIXES)}
  hf = {e["key"]: tuple(e["shape"]) for e in layout["hf_safetensors_keys"]}
  expected = eat._torch_layout(config)
  assert {eat._fairseq_name(k): v for k, v in expected.items()} == fairseq
  assert {eat._hf_name(k): v for k, v in expected.items()} == hf
  # Flax parameter count of the module, built abstractly at the released 10 s input size.
  fbank = jax.ShapeDtypeStruct((1, config.target_length, 128), jnp.float32)
  params = jax.eval_shape(eat.EAT(config).init, jax.random.key(0), fbank)["params"]
  counts = layout["counts"]
  assert params["positions"].shape == (config.max_positions, config.embed_dim)
  assert converted.count_params(params) == counts["encoder_params_incl_positions"]
  assert converted.count_params(params) - params["positions"].size == counts["encoder_params_excl_positions"]


def test_sincos_table_matches_the_released_layout(tiny):
  """The fixture's positions are the released sin-cos table plus N(0, 0.02) noise."""
  config, params = tiny
  residual = np.asarray(params["positions"]) - eat.sincos_positions(config.max_positions, config.embed_dim)
  assert 0.018 < residual.std() < 0.022 and abs(residual.mean()) < 1e-3
  # Hand check: row p = t * 8 + f holds sin(f) at channel 0 and sin(t) at channel D/2.
  table = eat.sincos_positions(6144, 64)
  assert table[8 * 5 + 3, 0] == pytest.approx(np.sin(3.0)) and table[8 * 5 + 3, 32] == pytest.approx(np.sin(5.0))
  assert table[8 * 5 + 3, 16] == pytest.approx(np.cos(3.0)) and table[8 * 5 + 3, 48] == pytest.approx(np.cos(5.0))
  assert table[1, 1] == pytest.approx(np.sin(10000.0 ** (-1 / 16)), rel=1e-6)


# --- precision, jit and batch invariance --------------------------------------------------------------------


def test_bfloat16_within_stated_tolerance(tiny, io):
  """bf16 activations (float32 params and softmax): max abs error <= 0.1 on O(1) outputs, CLS cosine > 0.999."""
  config, params = tiny
  out, _ = _run(config, params, io["fbank"], dtype=jnp.bfloat16)
  assert out.features.dtype == jnp.bfloat16
  got = np.asarray(out.features, np.float32)
  assert np.abs(got - io["features"]).max() < 0.1
  cls, ref = got[:, 0], io["features"][:, 0]
  cosine = np.sum(cls * ref, -1) / np.linalg.norm(cls, axis=-1) / np.linalg.norm(ref, axis=-1)
  assert cosine.min() > 0.999


def test_jit_and_batch_invariance(tiny, io):
  config, params = tiny
  model = eat.EAT(config)
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x).features)
  batched = np.asarray(apply(params, io["fbank"]))
  np.testing.assert_allclose(batched, io["features"], atol=ATOL, rtol=0)
  for i in range(2):
    single = np.asarray(apply(params, io["fbank"][i:i + 1]))
    np.testing.assert_allclose(single[0], batched[i], atol=1e-5, rtol=0)


# --- padding, pooling, dropout, input checks ----------------------------------------------------------------


def test_padding_mask(tiny, io):
  config, params = tiny
  fbank = io["fbank"]
  # An all-False mask changes nothing.
  out, _ = _run(config, params, fbank, padding_mask=np.zeros(fbank.shape[:2], bool))
  np.testing.assert_allclose(out.features, io["features"], atol=ATOL, rtol=0)
  assert out.token_mask.shape == (2, 201) and bool(out.token_mask.all())
  # Two extra padded time patches, masked: real tokens see exactly what they saw without them.
  padded = np.concatenate([fbank, np.full((2, 32, 128), 0.46706, np.float32)], axis=1)
  mask = np.zeros(padded.shape[:2], bool)
  mask[:, 400:] = True
  out, _ = _run(config, params, padded, padding_mask=mask)
  assert out.token_mask.shape == (2, 217)
  assert bool(out.token_mask[:, :201].all()) and not bool(out.token_mask[:, 201:].any())
  np.testing.assert_allclose(out.features[:, :201], io["features"], atol=ATOL, rtol=0)
  mean = eat.utterance_embedding(out, POOL_MEAN)
  np.testing.assert_allclose(mean, io["features"][:, 1:].mean(axis=1), atol=ATOL, rtol=0)
  # A patch with any real frame stays real.
  mask[:, 399] = True
  assert bool(eat.token_mask_from_frames(jnp.asarray(mask), config)[:, 1 + 24 * 8:1 + 25 * 8].all())


def test_dropout_only_in_train_mode(tiny, io):
  import dataclasses
  config, params = tiny
  noisy = dataclasses.replace(config, encoder_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
                              post_mlp_dropout=0.1, input_dropout=0.1, end_drop_path_rate=0.2)
  fbank = io["fbank"][:1, :64]
  model = eat.EAT(noisy)
  eval_out = model.apply({"params": params}, fbank).features
  expected = eat.EAT(config).apply({"params": params}, fbank).features
  np.testing.assert_array_equal(eval_out, expected)
  train = jax.jit(lambda seed: model.apply({"params": params}, fbank, train=True,
                                           rngs={"dropout": jax.random.key(seed)}).features)
  assert float(jnp.abs(train(0) - eval_out).max()) > 1e-2
  assert float(jnp.abs(train(0) - train(1)).max()) > 1e-2
  np.testing.assert_array_equal(train(0), train(0))


def test_positions_get_no_gradient(tiny, io):
  config, params = tiny
  model = eat.EAT(config)
  loss = lambda p: jnp.sum(model.apply({"params": p}, io["fbank"][:1, :32]).features ** 2)
  grads = jax.jit(jax.grad(loss))(params)
  assert float(jnp.abs(grads["positions"]).max()) == 0.0
  assert float(jnp.abs(grads["cls_token"]).max()) > 0.0


def test_bad_inputs_are_refused(tiny, io):
  config, params = tiny
  model = eat.EAT(config)
  with pytest.raises(ValueError, match="divisible by 16"):
    model.apply({"params": params}, io["fbank"][:, :398])
  with pytest.raises(ValueError, match="128"):
    model.apply({"params": params}, io["fbank"][..., :64])
