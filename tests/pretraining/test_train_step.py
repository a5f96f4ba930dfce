"""One pre-training step through the one train step: upstream's initialisation, the frozen position table, the
update order (objective -> AdamW -> EMA towards the updated student), and the logged figures."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from asd_jax.pretraining import config as config_lib
from asd_jax.pretraining import ema
from asd_jax.pretraining import loss as loss_lib
from asd_jax.pretraining import masking
from asd_jax.pretraining import objective
from asd_jax.training import optimizer
from asd_jax.training import train_step as ts

FRAMES = 64  # 4 x 8 patches
CONFIG = config_lib.EAT_TINY_PRETRAINING


def test_init_follows_upstream():
  big = config_lib.PretrainingConfig(encoder=config_lib.eat.EATConfig(depth=1, embed_dim=128, num_heads=4),
                                     decoder=config_lib.eat_decoder.DecoderConfig(decoder_dim=128, decoder_layers=1),
                                     targets=config_lib.TargetConfig(average_top_k_layers=1))
  student, decoder = jax.device_get(jax.jit(lambda k: loss_lib.init_params(k, big, FRAMES))(jax.random.key(0)))
  assert abs(student["blocks_0"]["mlp"]["fc1"]["kernel"].std() - 0.02) < 1e-3  # init_bert_params
  assert not student["blocks_0"]["attn"]["q_proj"]["bias"].any()
  bound = np.sqrt(6 / (256 + 128))  # Xavier over [D, 16 * 16]
  kernel = student["patch_embed"]["kernel"]
  assert kernel.max() <= bound and kernel.min() >= -bound and kernel.max() > 0.95 * bound
  assert np.abs(student["patch_embed"]["bias"]).max() <= 1 / 16
  assert abs(student["cls_token"].std() - 1.0) < 0.15  # N(0, 1)
  np.testing.assert_array_equal(student["pre_norm"]["scale"], 1.0)
  np.testing.assert_allclose(student["positions"], config_lib.eat.sincos_positions(6144, 128))
  conv = decoder["conv_0"]["kernel"]  # PyTorch's default: U(+-1/sqrt(fan_in)), fan_in = 8 * 3 * 3
  assert np.abs(conv).max() <= 1 / np.sqrt(8 * 9) and np.abs(conv).max() > 0.95 / np.sqrt(8 * 9)


@pytest.fixture(scope="module")
def step_and_state():
  student, decoder = jax.jit(lambda k: loss_lib.init_params(k, CONFIG, FRAMES))(jax.random.key(0))
  teacher = jax.tree.map(lambda x: x + 0.01, student)
  params = {"student": student, "decoder": decoder}
  labels = loss_lib.trainable_labels(params)
  # Plain SGD: Adam would turn float noise in near-zero gradients (e.g. of the key bias, which softmax ignores)
  # into full-size updates that differ between two compilations of the same maths.
  tx = optax.partition({optimizer.TRAINABLE: optax.sgd(1e-2), optimizer.FROZEN: optax.set_to_zero()}, labels)
  state = loss_lib.create_state(student, teacher, decoder, tx)
  return state, tx, labels


def test_update_order_and_frozen_positions(step_and_state):
  state, tx, labels = step_and_state
  assert labels["student"]["positions"] == optimizer.FROZEN
  assert labels["decoder"]["proj"]["kernel"] == optimizer.TRAINABLE
  fbank = jax.random.normal(jax.random.key(1), (2, FRAMES, 128))
  mask = masking.block_mask(jax.random.key(2), 4, (4, 8), CONFIG.mask)
  noise = 0.01 * jax.random.normal(jax.random.key(3), (4, 32, 64))
  state = state.replace(step=jnp.asarray(7, jnp.int32))
  # By hand: gradients of the objective's loss, the optimiser, then the EMA with decay(step + 1).
  def by_hand(state):
    def loss(p):
      return objective.eat_pretraining_objective(p["student"], state.extra["teacher"], p["decoder"], fbank, mask,
                                                 noise, config=CONFIG, num_visible=6, train=True)["loss"]
    value, grads = jax.value_and_grad(loss)(state.params)
    updates, _ = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return value, params, ema.update(state.extra["teacher"], params["student"], ema.one_minus_decay(CONFIG.ema, 8))

  # One compilation for both (XLA shares what they have in common).
  def loss(params, extra, batch, rng):  # the step's loss over these masks and mask tokens
    del batch, rng
    return loss_lib.objective_loss(params, extra, fbank, mask, noise, None, config=CONFIG, num_visible=6)

  step = ts.make_train_step(loss, tx, labels, update_extra=lambda p, e, n: loss_lib.update_teacher(p, e, n,
                                                                                                  config=CONFIG))
  (new, metrics), (value, params, teacher) = jax.jit(lambda s: (step(s, {}, jax.random.key(4)), by_hand(s)))(state)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
  jax.tree.map(close, new.params, params)
  jax.tree.map(close, new.extra["teacher"], teacher)
  np.testing.assert_allclose(metrics["loss"], value, rtol=1e-6)
  assert int(new.step) == 8
  np.testing.assert_array_equal(new.params["student"]["positions"], state.params["student"]["positions"])
  np.testing.assert_array_equal(new.extra["teacher"]["positions"], state.params["student"]["positions"])
  np.testing.assert_allclose(metrics["ema_decay"], 1000 * float(ema.decay(CONFIG.ema, 7)), rtol=1e-7)
  assert {"loss_regression", "loss_cls", "target_var", "pred_var", "masked_pct", "model_norm", "ema_norm",
          "grad_norm", ts.FINITE} <= set(metrics)
  assert bool(metrics[ts.FINITE])
  np.testing.assert_allclose(metrics["masked_pct"], 26 / 32, rtol=1e-6)
