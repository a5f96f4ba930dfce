"""Fast-path options compute what the reference path computes: split grouped convolution, remat, fused
attention and bfloat16 (within a stated tolerance), checked on the upstream fixture where one exists."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.models import beats

ATOL = 1e-4
# bfloat16 keeps 8 bits of mantissa: on the fixture (features of size up to 3.4) the tiny model's final
# features land within 0.05 (max) / 0.008 (RMS) of upstream's float32 values; the bounds leave 2x room.
BF16_MAX_ABS, BF16_RMS = 0.1, 0.02


@pytest.fixture(scope="module")
def tiny(fixtures):
  return beats.load(fixtures / "beats_tiny.pt")


@pytest.fixture(scope="module")
def io(fixtures):
  return dict(np.load(fixtures / "beats_tiny_io.npz"))


def _numpy_grouped_conv(x, kernel, groups):
  """Direct sum over taps, float64: y[b, t, o] = sum_k sum_i xpad[b, t + k, i] kernel[k, i, o] in o's group."""
  taps, in_per_group, out = kernel.shape
  pad = taps // 2
  xpad = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (0, 0)))
  steps = x.shape[1] + 2 * pad - taps + 1
  out_per_group = out // groups
  y = np.zeros((x.shape[0], steps, out))
  for g in range(groups):
    xg = xpad[..., g * in_per_group:(g + 1) * in_per_group]
    kg = kernel[..., g * out_per_group:(g + 1) * out_per_group].astype(np.float64)
    for k in range(taps):
      y[..., g * out_per_group:(g + 1) * out_per_group] += xg[:, k:k + steps] @ kg[k]
  return y


IMPLS = ["xla", "split", "fft", "split_fft_grad", "xla_fft_grad"]


@pytest.mark.parametrize("taps", [7, 8])
@pytest.mark.parametrize("impl", IMPLS)
def test_grouped_conv1d_matches_direct_sum(impl, taps):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 11, 12)).astype(np.float32)
  kernel = rng.normal(size=(taps, 3, 12)).astype(np.float32)
  got = beats.grouped_conv1d(jnp.asarray(x), jnp.asarray(kernel), groups=4, impl=impl)
  np.testing.assert_allclose(got, _numpy_grouped_conv(x, kernel, 4), rtol=0, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS[1:])
def test_grouped_conv1d_gradients_match_xla(impl):
  rng = np.random.default_rng(1)
  x, kernel = rng.normal(size=(2, 40, 64)).astype(np.float32), rng.normal(size=(16, 4, 64)).astype(np.float32)
  weights = rng.normal(size=(2, 41, 64)).astype(np.float32)

  def grads(impl):
    loss = lambda x, k: jnp.sum(weights * beats.grouped_conv1d(x, k, 16, impl))
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, kernel)

  for want, got in zip(grads("xla"), grads(impl)):
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4 * np.abs(want).max())


def test_default_conv_impl_avoids_split_convolutions_shorter_than_the_kernel():
  # "split" is 6-25x slower than XLA's grouped op on CPU when the kernel is longer than the sequence.
  assert beats.default_conv_impl(496, 128, 16, "cpu") == "split_fft_grad"
  assert beats.default_conv_impl(128, 128, 16, "cpu") == "split_fft_grad"
  assert beats.default_conv_impl(96, 128, 16, "cpu") == "xla_fft_grad"
  assert beats.default_conv_impl(496, 128, 16, "gpu") == "xla"
  assert beats.default_conv_impl(496, 128, 1, "cpu") == "xla"


@pytest.mark.parametrize("steps", [5, 11])  # shorter and longer than the 7 taps: both default paths
def test_grouped_conv1d_default_matches_direct_sum(steps):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, steps, 12)).astype(np.float32)
  kernel = rng.normal(size=(7, 3, 12)).astype(np.float32)
  got = beats.grouped_conv1d(jnp.asarray(x), jnp.asarray(kernel), groups=4)
  np.testing.assert_allclose(got, _numpy_grouped_conv(x, kernel, 4), rtol=0, atol=1e-5)


# Small enough to compile fast, with every training-time path switched on (dropouts, layer drop, decay).
SMALL = dataclasses.replace(beats.BEATS_TINY, encoder_embed_dim=32, encoder_ffn_embed_dim=64, embed_dim=16,
                            conv_pos=16, conv_pos_groups=4, dropout=0.1, attention_dropout=0.1,
                            activation_dropout=0.1, encoder_layerdrop=0.3)


def _loss_and_grads(params, fbank, *, remat=False, fused=False, train=False):
  model = beats.BEATs(SMALL, fused_attention=fused, remat=remat)

  def loss(p):  # weighted, so that the LayerNorm at each layer's end does not make it a constant
    out = model.apply({"params": p}, fbank, train=train, rngs={"dropout": jax.random.key(3)})
    weights = jax.random.normal(jax.random.key(4), out.layer_outputs[0].shape)
    return sum(jnp.mean(weights * layer) for layer in out.layer_outputs)

  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.fixture(scope="module")
def small():
  fbank = np.random.default_rng(2).normal(size=(2, 32, 128)).astype(np.float32)
  return jax.jit(beats.BEATs(SMALL).init)(jax.random.key(0), fbank)["params"], fbank


@pytest.mark.slow  # ~45 s; EAT's remat and fused attention gradients stay in the default suite
def test_remat_gives_the_same_loss_and_gradients(small):
  params, fbank = small
  loss_a, grads_a = _loss_and_grads(params, fbank, remat=False, train=True)
  loss_b, grads_b = _loss_and_grads(params, fbank, remat=True, train=True)
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6)
  assert jax.tree.structure(grads_a) == jax.tree.structure(grads_b)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7), grads_a, grads_b)
  # The dropout masks matter (so remat must replay the same ones): eval mode gives another loss.
  assert abs(float(_loss_and_grads(params, fbank, remat=True)[0]) - float(loss_a)) > 1e-4


@pytest.mark.slow  # ~18 s; test_eat_remat_and_fused_attention_give_the_same_gradients covers the path
def test_fused_attention_gives_the_same_gradients(small):
  params, fbank = small
  loss_a, grads_a = _loss_and_grads(params, fbank, fused=False)
  loss_b, grads_b = _loss_and_grads(params, fbank, fused=True)
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6), grads_a, grads_b)


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "dot_product_attention"])
def test_bfloat16_within_stated_tolerance_of_upstream(tiny, io, fused):
  config, params = tiny
  out = beats.BEATs(config, dtype=jnp.bfloat16, fused_attention=fused).apply({"params": params}, io["fbank"])
  got = np.asarray(out.features, np.float32)
  err = got - io["features"]
  assert np.abs(err).max() < BF16_MAX_ABS, np.abs(err).max()
  assert np.sqrt(np.mean(err**2)) < BF16_RMS
  assert all(layer.dtype == jnp.bfloat16 for layer in out.layer_outputs)
  # And it is really reduced precision: float32 is ~100x closer.
  exact = beats.BEATs(config).apply({"params": params}, io["fbank"]).features
  assert np.abs(np.asarray(exact) - io["features"]).max() < ATOL < np.abs(err).max()


# --- EAT ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eat_tiny(fixtures):
  from asd_jax.models import eat
  config, params, _ = eat.load_fairseq_checkpoint(fixtures / "eat_tiny.pt")
  return config, params, dict(np.load(fixtures / "eat_tiny_io.npz"))


def test_eat_fused_attention_reproduces_upstream_with_and_without_padding(eat_tiny):
  from asd_jax.models import eat
  config, params, io = eat_tiny
  fused = eat.EAT(config, fused_attention=True)
  np.testing.assert_allclose(fused.apply({"params": params}, io["fbank"]).features, io["features"], rtol=0,
                             atol=ATOL)
  # Two padded time patches hidden by the mask: the real tokens see exactly what they saw without them.
  padded = np.concatenate([io["fbank"], np.full((2, 32, 128), 0.46706, np.float32)], axis=1)
  mask = np.zeros(padded.shape[:2], bool)
  mask[:, 400:] = True
  out = fused.apply({"params": params}, padded, mask)
  np.testing.assert_allclose(out.features[:, :201], io["features"], rtol=0, atol=ATOL)


def test_eat_remat_and_fused_attention_give_the_same_gradients(eat_tiny):
  from asd_jax.models import eat
  config, params, io = eat_tiny
  config = dataclasses.replace(config, encoder_dropout=0.1, activation_dropout=0.1, end_drop_path_rate=0.2)
  fbank = io["fbank"][:, :64]
  weights = jax.random.normal(jax.random.key(4), (2, 33, config.embed_dim))

  def loss_and_grads(**options):
    model = eat.EAT(config, **options)
    loss = lambda p: jnp.mean(weights * model.apply({"params": p}, fbank, train=True,
                                                    rngs={"dropout": jax.random.key(3)}).features)
    return jax.jit(jax.value_and_grad(loss))(params)

  loss_a, grads_a = loss_and_grads()
  for options in ({"remat": True}, {"fused_attention": True}):
    loss_b, grads_b = loss_and_grads(**options)
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6), grads_a, grads_b)
