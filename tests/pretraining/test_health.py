"""The teacher-health check: relative change of param trees, the EMA schedule's start weight, the warning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.pretraining import ema
from asd_jax.pretraining import health


def test_relative_change_by_hand_and_skips_the_position_table():
  start = {"blocks_0": {"kernel": np.array([[3.0, 0.0]])}, "cls_token": np.array([4.0]), "positions": np.ones(5)}
  end = {"blocks_0": {"kernel": np.array([[3.0, 1.0]])}, "cls_token": np.array([2.0]), "positions": np.zeros(5)}
  # ||(0, 1, -2)|| / ||(3, 0, 4)|| = sqrt(5) / 5; the position table (copied, not averaged) is not counted.
  np.testing.assert_allclose(health.relative_change(start, end), np.sqrt(5) / 5, rtol=1e-15)
  assert health.relative_change(start, start) == 0.0


def test_relative_change_refuses_other_trees():
  a = {"blocks_0": {"kernel": np.ones((2, 2))}}
  with pytest.raises(ValueError, match="blocks_0/bias is in only one"):
    health.relative_change(a, {"blocks_0": {"kernel": np.ones((2, 2)), "bias": np.ones(2)}})
  with pytest.raises(ValueError, match="blocks_0/kernel: shape"):
    health.relative_change(a, {"blocks_0": {"kernel": np.ones((2, 3))}})
  with pytest.raises(ValueError, match="all zero"):
    health.relative_change({"k": np.zeros(3)}, {"k": np.ones(3)})


@pytest.mark.parametrize("decay,end_decay,anneal,steps", [
    (0.9998, 0.99999, 200, 200),  # the demo before issue 22: the teacher keeps 97.9 % of its start
    (0.99, 0.999, 100, 300),  # annealed, then constant
    (0.95, 0.95, 1, 50),  # constant
])
def test_start_weight_is_the_product_of_the_train_steps_decays(decay, end_decay, anneal, steps):
  """Runs the real EMA update (`ema.update`, the train step's) on a teacher of ones towards a student of zeros:
  what is left of the teacher is the weight of its start."""
  config = ema.EmaConfig(decay=decay, end_decay=end_decay, anneal_end_step=anneal)
  teacher = {"w": jnp.ones(3)}
  for step in range(steps):  # the train step at `step` moves the teacher with decay(step + 1)
    teacher = ema.update(teacher, {"w": jnp.zeros(3)}, ema.one_minus_decay(config, step + 1))
  want = float(jax.device_get(teacher["w"])[0])
  # float32 updates: about 6e-8 relative rounding per step, under 2e-5 after 300 steps.
  np.testing.assert_allclose(health.start_weight(steps, decay, end_decay, anneal), want, rtol=1e-4)


def test_teacher_warning_threshold():
  assert health.teacher_warning(0.05) is None
  assert health.teacher_warning(health.MIN_TEACHER_CHANGE) is None
  message = health.teacher_warning(0.0039, model="EAT (demo)")
  assert message.startswith("EAT (demo): the EMA teacher moved by 0.39 %") and "ema.anneal_end_step" in message
  assert health.teacher_warning(0.02, threshold=0.05) is not None
