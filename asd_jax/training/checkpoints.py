"""Orbax checkpoints of a training run: state, data-iterator position and run metadata, saved together.

Each step directory holds three items: `state` (the `TrainState` pytree), `data` (the input iterator's
position, JSON) and `meta` (config, label space, anything JSON). Saving all three atomically is what makes
`--resume` exact: the restored run sees the same parameters, optimiser moments, step counter (hence rngs
and learning rate) and the same next batch as the run that was killed.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def encode_iterator_state(state: Any) -> Any:
  """JSON-safe form of an iterator state (Grain DataLoader states are bytes, dataset iterators dicts)."""
  if isinstance(state, bytes):
    return {"__bytes_b64__": base64.b64encode(state).decode("ascii")}
  return state


def decode_iterator_state(state: Any) -> Any:
  if isinstance(state, dict) and set(state) == {"__bytes_b64__"}:
    return base64.b64decode(state["__bytes_b64__"])
  return state


class Checkpointer:
  """Periodic, keep-the-last-N checkpoints under `directory` (made absolute; Orbax requires it)."""

  def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, iterator_state: Any, meta: dict[str, Any], *, force: bool = False) -> None:
    """Saves (asynchronously) unless a checkpoint for `step` exists; call `wait()` before reading it."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave({"iterator": encode_iterator_state(iterator_state)}),
        meta=ocp.args.JsonSave(meta)), force=force)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """`(state, iterator_state, meta)` of `step` (default: latest); `abstract_state` gives shapes, dtypes and
    shardings (e.g. `jax.eval_shape` output with `.sharding` set)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    return restored.state, decode_iterator_state(restored.data["iterator"]), restored.meta

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    """Only the metadata (config, label space) of `step` (default: latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or eval_shape output) placed with `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
