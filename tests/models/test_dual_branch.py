"""Dual-branch model: wiring of the two encoders, inference embeddings, featex + SCAdaCos loss, sharding.

The EAT branch is the real tiny EAT (CLS pooling); the BEATs branch is a small stand-in encoder (the real
tiny BEATs is in the slow test, its gradient takes long to compile).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from asd_jax.models import dual_branch, eat, featex, scadacos
from asd_jax.models.encoder_output import EncoderOutput

NUM_CLASSES = 3
NUM_SUBCLUSTERS = 2
BEATS_DIM = 8  # the stand-in BEATs branch
EAT_DIM = eat.EAT_TINY.embed_dim
FUSED_DIM = BEATS_DIM + EAT_DIM


class TinyEncoder(nn.Module):
  """Stand-in BEATs branch with the encoders' call signature: 2 'layers' over 128-bin fbank frames."""

  dim: int

  @nn.compact
  def __call__(self, fbank, padding_mask=None, *, train=False):
    x = nn.Dense(self.dim, name="patch")(fbank)
    outputs = []
    for i in range(2):
      x = x + nn.Dense(self.dim, name=f"layer_{i}")(jnp.tanh(x))
      outputs.append(x)
    return EncoderOutput(layer_outputs=tuple(outputs), token_mask=None)


def _model():
  return dual_branch.DualBranch(beats=TinyEncoder(dim=BEATS_DIM), eat=eat.EAT(eat.EAT_TINY),
                                beats_pool="mean", eat_pool="cls")


def _inputs(batch=4):
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.normal(size=(batch, 10, 128)), jnp.float32),
          jnp.asarray(rng.normal(size=(batch, 32, 128)), jnp.float32))  # EAT: 2 x 8 patches + CLS


DEFAULT_CONFIG = dual_branch.DualBranchLossConfig(num_classes=NUM_CLASSES, num_subclusters=NUM_SUBCLUSTERS)


@functools.cache
def _initialised():
  """`(model, params, extra, beats_fbank, eat_fbank)`, initialised once (params depend only on C and K)."""
  model = _model()
  beats_fbank, eat_fbank = _inputs()
  init = jax.jit(lambda rng, b, e: dual_branch.init(rng, model, b, e, DEFAULT_CONFIG))
  params, extra = init(jax.random.key(0), beats_fbank, eat_fbank)
  return model, params, extra, beats_fbank, eat_fbank


def _setup(config=DEFAULT_CONFIG):
  assert (config.num_classes, config.num_subclusters) == (NUM_CLASSES, NUM_SUBCLUSTERS)
  model, params, extra, beats_fbank, eat_fbank = _initialised()
  return model, config, params, extra, beats_fbank, eat_fbank


@functools.cache
def _loss_and_grad():
  """The jitted value and gradient of the default loss (one compilation shared by the tests below)."""
  model = _initialised()[0]
  return jax.jit(jax.value_and_grad(functools.partial(dual_branch.loss_fn, model=model, config=DEFAULT_CONFIG),
                                    has_aux=True))


def test_init_shapes_and_initial_scales():
  _, _, params, extra, _, _ = _setup()
  assert set(params) == {"encoder", "head"} and set(params["encoder"]) == {"beats", "eat"}
  assert params["head"]["featex_centres"].shape == (FUSED_DIM, 3 * NUM_CLASSES * NUM_SUBCLUSTERS)
  assert extra["main_centres"].shape == (FUSED_DIM, NUM_CLASSES * NUM_SUBCLUSTERS)
  np.testing.assert_allclose(extra["main_scale"], np.sqrt(2) * np.log(6 - 1), rtol=1e-6)
  np.testing.assert_allclose(extra["featex_scale"], np.sqrt(2) * np.log(18 - 1), rtol=1e-6)


def test_embed_is_concatenation_of_each_branch_pooled():
  model, _, params, _, beats_fbank, eat_fbank = _setup()
  fused = dual_branch.embed(model, params, beats_fbank, eat_fbank)
  assert fused.shape == (4, FUSED_DIM)
  beats_out = TinyEncoder(dim=BEATS_DIM).apply({"params": params["encoder"]["beats"]}, beats_fbank)
  eat_out = eat.EAT(eat.EAT_TINY).apply({"params": params["encoder"]["eat"]}, eat_fbank)
  np.testing.assert_allclose(fused[:, :BEATS_DIM], np.mean(beats_out.features, axis=1), rtol=1e-6)
  np.testing.assert_allclose(fused[:, BEATS_DIM:], eat_out.features[:, 0], rtol=1e-6)

  layers = dual_branch.embed_layers(model, params, beats_fbank, eat_fbank)
  assert layers["beats"].shape == (4, 2, BEATS_DIM) and layers["eat"].shape == (4, 2, EAT_DIM)
  np.testing.assert_allclose(layers["beats"][:, -1], fused[:, :BEATS_DIM], rtol=1e-6)
  np.testing.assert_allclose(layers["eat"][:, 0], eat_out.layer_outputs[0][:, 0], rtol=1e-6)


def test_jit_matches_eager():
  model, _, params, _, beats_fbank, eat_fbank = _setup()
  embed = functools.partial(dual_branch.embed, model)
  np.testing.assert_allclose(jax.jit(embed)(params, beats_fbank, eat_fbank),
                             embed(params, beats_fbank, eat_fbank), rtol=1e-5, atol=1e-6)
  layers = functools.partial(dual_branch.embed_layers, model)
  jitted, eager = jax.jit(layers)(params, beats_fbank, eat_fbank), layers(params, beats_fbank, eat_fbank)
  for key in ("beats", "eat"):
    np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-5, atol=1e-6)


def _batch(beats_fbank, eat_fbank):
  return {"beats_fbank": beats_fbank, "eat_fbank": eat_fbank, "label": jnp.array([0, 2, 1, 1])}


@pytest.mark.parametrize("featex_prob", [0.0, 1.0])
def test_loss_without_mixup_equals_heads_composed_by_hand(featex_prob):
  config = dual_branch.DualBranchLossConfig(num_classes=NUM_CLASSES, num_subclusters=NUM_SUBCLUSTERS,
                                            mixup_prob=0.0, featex_prob=featex_prob, featex_weight=0.5)
  model, config, params, extra, beats_fbank, eat_fbank = _setup(config)
  loss, (metrics, new_extra) = dual_branch.loss_fn(params, extra, _batch(beats_fbank, eat_fbank),
                                                   jax.random.key(3), model=model, config=config)
  fused = dual_branch.embed(model, params, beats_fbank, eat_fbank)
  y = jax.nn.one_hot(jnp.array([0, 2, 1, 1]), NUM_CLASSES)
  main, main_scale, _ = scadacos.scadacos_loss(fused, y, extra["main_centres"], extra["main_scale"],
                                               num_subclusters=NUM_SUBCLUSTERS)
  if featex_prob == 1.0:  # every EAT embedding comes from the reversed batch
    x_ssl = jnp.concatenate([fused[:, :BEATS_DIM], fused[::-1, BEATS_DIM:]], axis=-1)
    y_ssl = jnp.concatenate([jnp.zeros_like(y), 0.5 * y, 0.5 * y[::-1]], axis=-1)
  else:
    x_ssl, y_ssl = fused, jnp.concatenate([y, jnp.zeros_like(y), jnp.zeros_like(y)], axis=-1)
  ssl, ssl_scale, _ = scadacos.scadacos_loss(x_ssl, y_ssl, params["head"]["featex_centres"],
                                             extra["featex_scale"], num_subclusters=NUM_SUBCLUSTERS)
  np.testing.assert_allclose(loss, main + 0.5 * ssl, rtol=1e-5)
  np.testing.assert_allclose(metrics["main_loss"], main, rtol=1e-5)
  np.testing.assert_allclose(new_extra["main_scale"], main_scale, rtol=1e-6)
  np.testing.assert_allclose(new_extra["featex_scale"], ssl_scale, rtol=1e-6)
  assert new_extra["main_centres"] is extra["main_centres"]
  # Training accuracy: the main head's most probable class (sub-cluster probabilities summed per class) against
  # the labels, nothing mixed up here.
  cos = np.asarray(scadacos.cosine_similarity(fused, extra["main_centres"])).reshape(4, NUM_CLASSES, NUM_SUBCLUSTERS)
  predicted = np.argmax(np.exp(float(main_scale) * cos).sum(-1), axis=-1)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(predicted == np.array([0, 2, 1, 1])), rtol=1e-6)
  # Eval-mode class scores (what held-out accuracy uses) rank the classes the same way, with the adapted scale.
  scores = dual_branch.class_log_probabilities(model, params, new_extra, beats_fbank, eat_fbank,
                                               num_subclusters=NUM_SUBCLUSTERS)
  want = np.log(np.exp(float(main_scale) * cos).sum(-1)) - np.log(np.exp(float(main_scale) * cos).sum((1, 2)))[:, None]
  np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)


def test_padded_samples_do_not_count():
  config = dual_branch.DualBranchLossConfig(num_classes=NUM_CLASSES, num_subclusters=NUM_SUBCLUSTERS,
                                            mixup_prob=0.0, featex_prob=0.0)
  model, config, params, extra, beats_fbank, eat_fbank = _setup(config)
  batch = dict(_batch(beats_fbank, eat_fbank), valid=jnp.array([1.0, 1.0, 1.0, 0.0]))
  loss, (_, new_extra) = dual_branch.loss_fn(params, extra, batch, jax.random.key(0), model=model, config=config)
  first3 = {key: value[:3] for key, value in _batch(beats_fbank, eat_fbank).items()}
  want, (_, want_extra) = dual_branch.loss_fn(params, extra, first3, jax.random.key(0), model=model, config=config)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(new_extra["main_scale"], want_extra["main_scale"], rtol=1e-5)
  np.testing.assert_allclose(new_extra["featex_scale"], want_extra["featex_scale"], rtol=1e-5)


def test_mixup_acts_on_the_inputs_given_to_the_frontend():
  model, config, params, extra, beats_fbank, eat_fbank = _setup()
  seen = {}

  def frontend(inputs):
    seen["wav"] = inputs["wav"]
    wav = inputs["wav"]  # [B, 10 * 128] "waveform", reshaped into both fbanks
    frames = wav.reshape(wav.shape[0], 10, 128)
    return frames, jnp.tile(frames, (1, 4, 1))[:, :32]  # EAT takes a multiple of 16 frames

  wav = beats_fbank.reshape(4, -1)
  rng = jax.random.key(5)
  dual_branch.loss_fn(params, extra, {"wav": wav, "label": jnp.array([0, 2, 1, 1])}, rng,
                      model=model, config=config, frontend=frontend)
  lam, apply = featex.draw_mixup(jax.random.split(rng, 3)[0], 4, config.mixup_prob)
  want = np.where(np.asarray(apply)[:, None], np.asarray(lam)[:, None] * wav + (1 - np.asarray(lam)[:, None]) *
                  wav[::-1], wav)
  np.testing.assert_allclose(seen["wav"], want, rtol=1e-6)


def test_gradients_reach_encoders_and_featex_centres_only():
  _, _, params, extra, beats_fbank, eat_fbank = _setup()
  (_, (metrics, _)), grads = _loss_and_grad()(params, extra, _batch(beats_fbank, eat_fbank), jax.random.key(1))
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(leaf))
  assert float(jnp.abs(grads["head"]["featex_centres"]).sum()) > 0
  assert float(jnp.abs(grads["encoder"]["beats"]["layer_1"]["kernel"]).sum()) > 0
  assert float(jnp.abs(grads["encoder"]["eat"]["blocks_1"]["attn"]["q_proj"]["kernel"]).sum()) > 0
  assert all(np.isfinite(float(v)) for v in metrics.values())


def test_sharded_loss_and_grads_equal_single_device():
  if jax.device_count() < 2:
    pytest.skip("needs 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
  _, _, params, extra, beats_fbank, eat_fbank = _setup()
  batch = _batch(beats_fbank, eat_fbank)
  step = _loss_and_grad()
  rng = jax.random.key(2)
  (loss, (_, new_extra)), grads = step(params, extra, batch, rng)

  mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharded_batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
  replicated = NamedSharding(mesh, P())
  (s_loss, (_, s_extra)), s_grads = step(jax.device_put(params, replicated), jax.device_put(extra, replicated),
                                         sharded_batch, rng)
  np.testing.assert_allclose(s_loss, loss, rtol=1e-5)
  np.testing.assert_allclose(s_extra["main_scale"], new_extra["main_scale"], rtol=1e-5)
  np.testing.assert_allclose(s_extra["featex_scale"], new_extra["featex_scale"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s_grads, grads)


@pytest.mark.slow  # about 30 s of CPU, mostly compiling the BEATs gradient
def test_real_tiny_encoders_from_waveforms():
  """Tiny BEATs and tiny EAT as the branches, fbanks computed from waveforms."""
  from asd_jax.audio import fbank as fb
  from asd_jax.models import beats

  # No layerdrop, so every layer's attention must receive a gradient.
  beats_config = dataclasses.replace(beats.BEATS_TINY, encoder_layerdrop=0.0)
  model = dual_branch.DualBranch(beats=beats.BEATs(beats_config), eat=eat.EAT(eat.EAT_TINY), eat_pool="cls")
  config = dual_branch.DualBranchLossConfig(num_classes=NUM_CLASSES, num_subclusters=NUM_SUBCLUSTERS)
  eat_fbank_config = fb.FbankConfig(**{**fb.EAT_FBANK.__dict__, "target_length": 32})
  frontend = functools.partial(dual_branch.wav_fbanks, beats_config=fb.BEATS_FBANK, eat_config=eat_fbank_config)
  wav = 0.1 * jax.random.normal(jax.random.key(0), (4, 3200))  # 0.2 s at 16 kHz -> 18 BEATs frames
  beats_fbank, eat_fbank = frontend({"wav": wav})
  params, extra = dual_branch.init(jax.random.key(1), model, beats_fbank, eat_fbank, config)
  embed = functools.partial(dual_branch.embed, model)
  fused = embed(params, beats_fbank, eat_fbank)
  assert fused.shape == (4, beats.BEATS_TINY.encoder_embed_dim + EAT_DIM)
  np.testing.assert_allclose(jax.jit(embed)(params, beats_fbank, eat_fbank), fused, rtol=1e-4, atol=1e-5)
  loss_fn = functools.partial(dual_branch.loss_fn, model=model, config=config, frontend=frontend)
  grads, (metrics, _) = jax.jit(jax.grad(loss_fn, has_aux=True))(
      params, extra, {"wav": wav, "label": jnp.array([0, 2, 1, 1])}, jax.random.key(2))
  assert np.isfinite(float(metrics["loss"]))
  for branch in ("beats", "eat"):
    q_grads = [g for path, g in jax.tree_util.tree_leaves_with_path(grads["encoder"][branch])
               if "q_proj" in jax.tree_util.keystr(path) and "kernel" in jax.tree_util.keystr(path)]
    assert len(q_grads) == 2 and all(float(jnp.abs(g).sum()) > 0 for g in q_grads), branch
