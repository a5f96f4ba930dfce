"""The training log: metrics as one JSON object per line in `metrics.jsonl`, and TensorBoard if available.

Only process 0 writes. TensorBoard logging uses `tensorboardX` when it is installed (it is not a
dependency); the JSONL file is always written and is what tests and scripts read. `drop_after(step)` is
what a resumed run calls first: rows past the step it resumes from, the compile row (`COMPILE`) an earlier
invocation wrote at that step (it started there too and was killed before its next checkpoint; the resumed run
writes its own) and a line cut short by a kill are dropped, rewriting the file atomically, so every step has
exactly one row of metrics and one compile row at most.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from absl import logging

from asd_jax import atomic

FILE = "metrics.jsonl"  # below the run's workdir
COMPILE = "compile_s"  # the key of the row an invocation writes at its first step: seconds to compile the step


def _plain(value: Any) -> Any:
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    return np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  return value


class MetricWriter:
  """Appends `{"step": step, **metrics}` to `<workdir>/metrics.jsonl` (and TensorBoard scalars)."""

  def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(os.fspath(workdir), FILE)
    self._tb = None
    if self.enabled:
      os.makedirs(os.fspath(workdir), exist_ok=True)
      if tensorboard:
        try:
          from tensorboardX import SummaryWriter  # Optional; not a dependency.
          self._tb = SummaryWriter(os.path.join(os.fspath(workdir), "tensorboard"))
        except ImportError:
          pass

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
    with atomic.naming(self.path), open(self.path, "a") as f:  # a full disk names the file
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for key, value in row.items():
        if key != "step" and isinstance(value, (int, float)):
          self._tb.add_scalar(key, value, step)

  def drop_after(self, step: int) -> int:
    """Removes the rows with `"step" > step`, the `COMPILE` row at `step` and unreadable lines (atomically);
    returns how many went."""
    if not self.enabled or not os.path.isfile(self.path):
      return 0
    with open(self.path) as f:
      lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:  # the last line of a killed run may be cut short
        continue
      if isinstance(row, dict) and (int(row.get("step", 0)) < step or
                                    (int(row.get("step", 0)) == step and COMPILE not in row)):
        kept.append(line if line.endswith("\n") else line + "\n")
    dropped = len(lines) - len(kept)
    if dropped:
      atomic.write_text(self.path, "".join(kept))
      logging.info("%s: dropped %d row(s) past step %d or of its compilation (written after the checkpoint this "
                   "run resumes from)",
                   self.path, dropped, step)
    return dropped

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
