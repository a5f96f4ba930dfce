"""The EMA teacher: upstream's decay annealing (get_annealed_rate) and the update, against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.pretraining import ema

BASE = ema.EmaConfig()


def _annealed(start, end, step, total):  # upstream's schedule, written out in float64
  return end if step >= total else end - (end - start) * (1 - step / total)


def test_decay_schedule():
  for step in (0, 1, 2, 777, 50_000, 99_999, 100_000, 250_000):
    want = _annealed(0.9998, 0.99999, step, 100_000)
    np.testing.assert_allclose(float(ema.decay(BASE, step)), want, atol=1e-7)
    np.testing.assert_allclose(float(ema.one_minus_decay(BASE, step)), 1 - want, rtol=1e-6)
  assert float(ema.decay(BASE, 0)) == np.float32(0.9998)
  constant = ema.EmaConfig(decay=0.999, end_decay=0.999)
  assert float(ema.one_minus_decay(constant, 10**6)) == np.float32(1 - 0.999)
  np.testing.assert_allclose(ema.decay(BASE, jnp.arange(3)), [_annealed(0.9998, 0.99999, s, 100_000) for s in range(3)],
                             atol=1e-7)


def test_update_moves_trained_tensors_and_copies_the_position_table():
  teacher = {"positions": jnp.full((4, 2), 7.0), "blocks_0": {"kernel": jnp.full((2, 2), 1.0)}, "cls_token": jnp.zeros(3)}
  student = {"positions": jnp.full((4, 2), -1.0), "blocks_0": {"kernel": jnp.full((2, 2), 3.0)}, "cls_token": jnp.ones(3)}
  moved = jax.device_get(ema.update(teacher, student, 0.25))
  np.testing.assert_array_equal(moved["blocks_0"]["kernel"], np.full((2, 2), 0.75 * 1.0 + 0.25 * 3.0))
  np.testing.assert_array_equal(moved["cls_token"], np.full(3, 0.25))
  np.testing.assert_array_equal(moved["positions"], student["positions"])
  norm = float(ema.tracked_norm(student))
  np.testing.assert_allclose(norm, np.sqrt(4 * 9 + 3), rtol=1e-6)  # the position table is not tracked
