"""Orbax checkpoints of a training run: state, data-iterator position and run metadata, saved together.

Each step directory holds three items: `state` (the `TrainState` pytree), `data` (the input iterator's
position, JSON) and `meta` (config, label space, anything JSON). Saving all three atomically is what makes
`--resume` exact: the restored run sees the same parameters, optimiser moments, step counter (hence rngs
and learning rate) and the same next batch as the run that was killed. `check_same_run` compares a
checkpoint's `meta` with the current run's before anything is restored, so a changed config is an error
that names each differing field rather than a silent mix of two runs (or an unreadable shape mismatch).
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


# --- Which settings make two runs the same ----------------------------------------------------------------------
# The one declaration of config compatibility, checked by `check_same_run` wherever a saved model is reused:
# resuming a training run and reusing a pipeline's trained model folder (`RUN_FIELDS`), restoring a checkpoint
# for embedding or export (`MODEL_FIELDS`). Dotted paths into a checkpoint's metadata; "config.lora" means every
# field under it. Fields left out (data root and workers, logging, checkpoint cadence, the embedding settings)
# never refuse a reuse; everything under config.model is compared, its fast-path switches included.

# Shape the trained parameters: a checkpoint read with other values would be misread. (LoRA's alpha only
# scales the merge, and the saved value is used; the optimiser only shapes state restored alongside.)
MODEL_FIELDS = ("config.model", "config.lora.enabled", "config.lora.rank", "config.lora.targets", "config.loss")
# Make one training run: continuing (or reusing) a run with other values would mix two runs' settings.
RUN_FIELDS = MODEL_FIELDS + ("config.seed", "config.data.sample_rate", "config.data.clip_seconds", "config.lora",
                             "config.optim", "config.train.batch_size", "config.train.epochs", "data_root",
                             "label_space", "num_steps")


def config_fields(fields: tuple[str, ...]) -> tuple[str, ...]:
  """The entries of `fields` that are config fields (what a saved `config.json` alone can be checked on)."""
  return tuple(f for f in fields if f == "config" or f.startswith("config."))


def _lookup(meta: dict[str, Any], field: str) -> Any:
  value: Any = meta
  for key in field.split("."):
    if not isinstance(value, dict) or key not in value:
      return _ABSENT
    value = value[key]
  return value


def _flatten(field: str, value: Any) -> dict[str, Any]:
  if isinstance(value, dict) and value:
    return {k: v for key, sub in value.items() for k, v in _flatten(f"{field}.{key}", sub).items()}
  return {field: value}


class _Absent:

  def __repr__(self) -> str:
    return "<absent>"


_ABSENT = _Absent()


def _show(value: Any) -> str:
  if isinstance(value, list) and len(value) > 4:
    return f"{len(value)} entries"
  return repr(value)


def _describe(field: str, saved: Any, now: Any) -> str:
  line = f"  {field}: saved {_show(saved)}, now {_show(now)}"
  if isinstance(saved, list) and isinstance(now, list) and (len(saved) > 4 or len(now) > 4):
    name = lambda x: x.get("name", x) if isinstance(x, dict) else x  # noqa: E731  (label-space classes)
    gone = [name(x) for x in saved if x not in now]
    new = [name(x) for x in now if x not in saved]
    line += f" (only saved: {gone[:5]}, only now: {new[:5]})" if gone or new else " (same entries, other order)"
  return line


def check_same_run(directory: str, saved_meta: dict[str, Any], meta: dict[str, Any], fields: tuple[str, ...],
                   *, hint: str = "") -> None:
  """Raises ValueError naming `directory` and each differing field (saved vs now) of `fields`.

  `fields` are dotted paths into the metadata (`"config.lora"` compares every field under it, one line per
  leaf; `"num_steps"` a single value); a field missing on one side shows as `<absent>`.
  """
  saved, now = {}, {}
  for field in fields:
    saved.update(_flatten(field, _lookup(saved_meta, field)))
    now.update(_flatten(field, _lookup(meta, field)))
  differing = [_describe(f, saved.get(f, _ABSENT), now.get(f, _ABSENT)) for f in sorted(set(saved) | set(now))
               if saved.get(f, _ABSENT) != now.get(f, _ABSENT)]
  if differing:
    raise ValueError("\n".join([f"checkpoint {directory} does not match this run's settings:", *differing]
                               + ([hint] if hint else [])))


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or eval_shape output) placed with `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
