"""Did a pre-training run's EMA teacher move? Pure functions of its parameters and of its EMA schedule.

In data2vec-style pre-training the student regresses the EMA teacher's outputs. A teacher that stays where it
started gives the targets of the initial (random) network for the whole run: the student then learns to
imitate a random encoder, and the exported encoder is no better than random features (issue 22: the demo's
200 updates at upstream's 400k-update decay changed the teacher's norm by 0.01 % and its parameters by 0.4 %).

- `relative_change(start, end)`: `||end - start|| / ||start||` over the EMA-averaged tensors of two encoder
  param trees (nested mappings of arrays; the position table, copied rather than averaged, is left out).
- `start_weight(...)`: the weight the initial teacher keeps in the final one under an EMA schedule, the
  product of the per-update decays. Since `teacher_end = w * teacher_start + (1 - w) * (average of the
  students)`, the relative change is at most `(1 - w)` times the students' largest relative distance from the
  start: a schedule with `w` near 1 cannot move the teacher, whatever the learning rate.
- `teacher_warning(change)`: a message when the change is below `MIN_TEACHER_CHANGE`, else None.

A pre-training run logs its teacher's relative change from its start as `teacher_change` in the last row of its
`metrics.jsonl` (`asd_jax.pretraining.pretrain`); the pipeline warns from it and the report shows the warning.

The threshold, `MIN_TEACHER_CHANGE = 0.01`, is the project's choice from the demo's measurements (issue 22,
BENCHMARKS.md "EAT pre-training at demo scale"): with upstream's schedule over 200 updates the teacher moved
0.39-0.40 % (3 seeds) and probed exactly like the initial network (within 0.2 points on all four probes of
`asd_jax.pretraining.probe`); every run whose teacher moved 8 % or more changed the encoder measurably (for
better or, at a too-high learning rate, for worse). 1 % is 2.5 times the first and 8 times below the second.
A moved teacher is necessary, not sufficient: the probe says whether what it learned helps.
The start and end trees: for a run from scratch the start is the trainer's initialisation of its seed
(`asd_jax.pretraining.pretrain.initial_model`), for a continued one the checkpoint's teacher; the end is the
exported teacher (`pretrain --export_teacher`) or the state's `extra["teacher"]`.
NumPy only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

MIN_TEACHER_CHANGE = 0.01
TEACHER_CHANGE = "teacher_change"  # the metric a pre-training run logs at its last step (`pretrain.pretrain`)
SKIPPED = ("positions",)  # untrained buffers the teacher copies from the student (`ema.COPIED`)


def _leaves(tree: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
  if isinstance(tree, Mapping):
    for key in sorted(tree):
      yield from _leaves(tree[key], path + (str(key),))
  else:
    yield path, np.asarray(tree, np.float64)


def relative_change(start: Any, end: Any) -> float:
  """`||end - start|| / ||start||` (global L2 over the averaged leaves, float64) of two param trees.

  Raises ValueError when the trees differ in structure or shapes (naming the first differing leaf), or when
  `start` is all zeros."""
  a, b = dict(_leaves(start)), dict(_leaves(end))
  if a.keys() != b.keys():
    diff = sorted(a.keys() ^ b.keys())[0]
    raise ValueError(f"parameter trees differ: {'/'.join(diff)} is in only one of them")
  diff_sq = norm_sq = 0.0
  for path in a:
    if any(part in SKIPPED for part in path):
      continue
    if a[path].shape != b[path].shape:
      raise ValueError(f"parameter {'/'.join(path)}: shape {a[path].shape} at the start, {b[path].shape} at the end")
    diff_sq += float(np.sum((b[path] - a[path]) ** 2))
    norm_sq += float(np.sum(a[path] ** 2))
  if norm_sq == 0.0:
    raise ValueError("relative_change: the starting parameters are all zero")
  return float(np.sqrt(diff_sq / norm_sq))


def start_weight(num_steps: int, decay: float, end_decay: float, anneal_end_step: int) -> float:
  """Weight of the initial teacher in the teacher after `num_steps` updates: prod of decay(n), n = 1..num_steps
  (update n moves the teacher with decay(n), as the train step does)."""
  steps = np.arange(1, num_steps + 1, dtype=np.float64)
  if decay == end_decay:
    d = np.full_like(steps, decay)
  else:
    d = np.where(steps >= anneal_end_step, end_decay,
                 end_decay - (end_decay - decay) * (1.0 - steps / max(anneal_end_step, 1)))
  return float(np.exp(np.sum(np.log(d))))


def teacher_warning(change: float, *, threshold: float = MIN_TEACHER_CHANGE, model: str = "EAT pre-training"
                    ) -> str | None:
  """A warning naming `model` when the teacher's relative change is below `threshold`, else None."""
  if change >= threshold:
    return None
  return (f"{model}: the EMA teacher moved by {100 * change:.3g} % of its norm (below {100 * threshold:.3g} %): "
          "its targets stayed those of the initial network, so the encoder learned little beyond imitating it. "
          "Scale the EMA schedule (ema.decay, ema.end_decay, ema.anneal_end_step) to the run's length.")
