"""Orbax checkpoints of a training run: state, data-iterator position and run metadata, saved together.

Each step directory holds three items: `state` (the `TrainState` pytree), `data` (the input iterator's
position, JSON) and `meta` (config, label space, anything JSON). Saving all three atomically is what makes
`--resume` exact: the restored run sees the same parameters, optimiser moments, step counter (hence rngs
and learning rate) and the same next batch as the run that was killed. `check_same_run` compares a
checkpoint's `meta` with the current run's before anything is restored, so a changed config is an error
that names each differing field rather than a silent mix of two runs (or an unreadable shape mismatch).

Damage is detected at restore: `meta` also holds `state_checksum`, a position-weighted sum of every state
array's bits (one jitted pass on the devices at save; `checksums`), and a restored state must reproduce it
(checkpoints written before it existed get a finite-value check instead). A training run resumes with
`restore(..., fall_back=True)`: a latest step that cannot be read (missing or damaged files, a wrong
checksum) is reported in a warning naming it and why, moved aside to `<step>.unreadable` once an older
step has restored (so it can be inspected, Orbax's keep-the-last-N collection no longer counts it, and the
resumed run can write that step again), and the newest readable step is used. Older good steps are never
touched. Readers (`embed`) use `fall_back=False`: an unreadable latest step is an error, not an older model.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from asd_jax import errors
from asd_jax.audio import channels

_JSON_ITEM_FILE = "metadata"  # the file Orbax's JsonCheckpointHandler writes in an item's folder (`data`, `meta`)
CHECKSUM_KEY = "state_checksum"  # meta entry: {leaf path: checksum} of the saved state
UNREADABLE_SUFFIX = ".unreadable"  # a damaged step folder is renamed <step>.unreadable (not a step for Orbax)


class UnreadableCheckpointError(ValueError):
  """A checkpoint step that cannot be restored (missing or damaged files, a wrong checksum)."""


class CheckpointWriteError(OSError):
  """A checkpoint step that could not be written (a full disk, say); the message names its folder."""


def _words(x: jax.Array) -> jax.Array:
  """The bits of `x` as uint32 words, flattened."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).ravel()
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  size = x.dtype.itemsize
  if size == 4 or size == 8:  # 8 bytes become [..., 2] words
    return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()
  unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()


@jax.jit
def _checksum(leaf: jax.Array) -> jax.Array:
  """One leaf's checksum; jitted per leaf, so a model compiles it once per distinct shape and dtype."""
  words = _words(leaf)
  # Odd, pseudo-random weights (Fibonacci hashing): any change of one word changes the sum mod 2^32, and so
  # does moving values between positions.
  weights = (jnp.arange(words.size, dtype=jnp.uint32) * jnp.uint32(0x9E3779B1)) | jnp.uint32(1)
  return jnp.sum(words * weights, dtype=jnp.uint32)


def checksums(tree: Any) -> dict[str, int]:
  """{leaf path: uint32 position-weighted sum of the leaf's bits} of the arrays of `tree` (on the devices)."""
  flat = [(jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
          if isinstance(leaf, (jax.Array, np.ndarray, np.generic))]
  sums = [_checksum(jnp.asarray(leaf)) for _, leaf in flat]
  # Replicated outputs: every process holds the value (device_get needs fully addressable arrays).
  return {name: int(np.asarray(value.addressable_data(0))) for (name, _), value in zip(flat, sums)}


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
    self._writing: int | None = None  # the step of the save in flight (its failure shows at the next call)
    self._failed = False  # a failed save was raised (Orbax raises it again when closed)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, iterator_state: Any, meta: dict[str, Any], *, force: bool = False) -> None:
    """Saves (asynchronously) unless a checkpoint for `step` exists; call `wait()` before reading it.

    `meta` is saved with the state's `checksums` added under `CHECKSUM_KEY` (restore checks and removes it).
    A save that fails (here, or in the background: then at the next `save` or `wait`) raises
    `CheckpointWriteError` naming the step's folder and the latest complete step; nothing of it is kept."""
    self.wait()  # the previous save first (Orbax would wait for it too), so that a failure names its own step
    if step in self._manager.all_steps():
      return
    meta = {**meta, CHECKSUM_KEY: checksums(state)}
    self._writing = step
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave({"iterator": encode_iterator_state(iterator_state)}),
          meta=ocp.args.JsonSave(meta)), force=force)
    except Exception as e:  # noqa: BLE001  (see _write_error)
      raise self._write_error(e) from e

  def _write_error(self, error: BaseException) -> CheckpointWriteError:
    """The error of the failed save of `self._writing` (Orbax and TensorStore raise many kinds; Orbax's own
    tracebacks of it are logged from its threads, `errors.quiet_orbax_error_logs` drops them in the programs)."""
    step, self._writing, self._failed = self._writing, None, True
    errors.quiet_late_callbacks()
    self._manager.reload()
    latest = self._manager.latest_step()
    kept = (f"the latest checkpoint is step {latest} in {self.directory}; once the cause (a full disk?) is fixed, "
            "run again to continue from it" if latest is not None else
            "no checkpoint was written; once the cause (a full disk?) is fixed, run again to start afresh")
    return CheckpointWriteError(f"cannot write checkpoint step {step} to {os.path.join(self.directory, str(step))} "
                                f"({errors.reason(error)}); that step is not saved (Orbax never reads its unfinished "
                                f"folder): {kept}")

  def _where(self, step: int) -> str:
    return f"checkpoint step {step} in {self.directory}"

  def _unreadable(self, step: int, error: BaseException, items: tuple[str, ...]) -> str:
    """`<where> is unreadable (<why>)`; a JSON item (`data`, `meta`) that does not parse is named by its file."""
    reason = errors.reason(error)
    if isinstance(errors.innermost(error, causes=True), json.JSONDecodeError):
      for item in items:
        path = os.path.join(self.directory, str(step), item, _JSON_ITEM_FILE)
        try:
          with open(path, encoding="utf-8") as f:
            json.load(f)
        except (OSError, ValueError) as e:
          reason = f"{path}: {errors.reason(e)}; a truncated or damaged file"
          break
    return f"{self._where(step)} is unreadable ({reason})"

  def _restore_step(self, abstract_state: Any, step: int) -> tuple[Any, Any, dict[str, Any]]:
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
          meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001  Orbax and TensorStore raise many kinds (a bare Exception, too)
      errors.quiet_late_callbacks()
      raise UnreadableCheckpointError(self._unreadable(step, e, ("meta", "data"))) from e
    state, meta = restored.state, dict(restored.meta)
    saved = meta.pop(CHECKSUM_KEY, None)
    if saved is not None:
      damaged = sorted(name for name, value in checksums(state).items() if saved.get(name) != value)
      if damaged:
        raise UnreadableCheckpointError(f"{self._where(step)} is damaged: the checksum of {len(damaged)} "
                                        f"array(s) differs from the saved one ({', '.join(damaged[:3])})")
    else:  # written before checksums: at least refuse non-finite values
      params = getattr(state, "params", state)
      bad = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
             if jnp.issubdtype(x.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(x)))]
      if bad:
        raise UnreadableCheckpointError(f"{self._where(step)} holds non-finite parameters ({', '.join(bad[:3])})")
    return state, decode_iterator_state(restored.data["iterator"]), meta

  def restore(self, abstract_state: Any, step: int | None = None, *, fall_back: bool = False
              ) -> tuple[Any, Any, dict[str, Any]]:
    """`(state, iterator_state, meta)` of `step` (default: latest); `abstract_state` gives shapes, dtypes and
    shardings (e.g. `jax.eval_shape` output with `.sharding` set).

    Raises `UnreadableCheckpointError` naming the step when it cannot be read or fails its checksum. With
    `fall_back` (and no `step`), the newest step that restores is used instead, after a warning naming each
    unreadable newer step and why; those are then moved aside (`<step>.unreadable`) so that the run can
    save those steps again. When no step restores, nothing is moved and the error lists every step.
    """
    if step is not None or not fall_back:
      step = self.latest_step() if step is None else step
      if step is None:
        raise FileNotFoundError(f"no checkpoint in {self.directory}")
      return self._restore_step(abstract_state, step)
    failures = []
    for candidate in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._restore_step(abstract_state, candidate)
      except UnreadableCheckpointError as e:
        failures.append((candidate, str(e)))
        continue
      if failures:
        self._set_aside([s for s, _ in failures], candidate, [reason for _, reason in failures])
      return restored
    if not failures:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    raise UnreadableCheckpointError("no checkpoint step restores:\n  " + "\n  ".join(r for _, r in failures)
                                    + "\n(nothing was moved or deleted; use a new workdir to start afresh)")

  def _set_aside(self, steps: list[int], good: int, reasons: list[str]) -> None:
    """Renames the unreadable `steps` to `<step>.unreadable` (process 0) and tells the manager."""
    for step, reason in zip(steps, reasons):
      target = os.path.join(self.directory, f"{step}{UNREADABLE_SUFFIX}")
      n = 1
      while os.path.exists(target):
        n += 1
        target = os.path.join(self.directory, f"{step}{UNREADABLE_SUFFIX}{n}")
      if jax.process_index() == 0:
        os.rename(os.path.join(self.directory, str(step)), target)
      logging.warning("%s; moved it to %s and resuming from step %d, the newest readable step", reason, target,
                      good)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("asd_jax checkpoints set aside")
    self._manager.reload()

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    """Only the metadata (config, label space) of `step` (default: the newest step whose metadata reads;
    an unreadable newer one is skipped with a warning: `restore(..., fall_back=True)` then deals with it)."""
    steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    reasons = []
    for candidate in steps:
      try:
        meta = self._manager.restore(candidate, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        return {k: v for k, v in meta.items() if k != CHECKSUM_KEY}
      except Exception as e:  # noqa: BLE001  (see _restore_step)
        errors.quiet_late_callbacks()
        reasons.append(self._unreadable(candidate, e, ("meta",)))
        if step is None:
          logging.warning("%s; reading the metadata of an older step", reasons[-1])
    raise UnreadableCheckpointError("; ".join(reasons))

  def wait(self) -> None:
    """Blocks until the save in flight is written; `CheckpointWriteError` if it failed (see `save`)."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001  (see _write_error)
      raise self._write_error(e) from e
    self._writing = None

  def close(self) -> None:
    try:
      self._manager.close()
    except Exception as e:  # noqa: BLE001  (see _write_error)
      if not self._failed:  # else Orbax raises the failure that was raised already
        raise self._write_error(e) from e


# --- Which settings make two runs the same ----------------------------------------------------------------------
# Each kind of run declares the metadata fields that make it one run (`asd_jax.finetuning.fine_tune.RUN_FIELDS`,
# `asd_jax.pretraining.pretrain.RUN_FIELDS`), compared by `check_same_run` wherever a saved run is continued or
# reused. Dotted paths into a checkpoint's metadata; "config.optim" means every field under it.

# Settings a resumed run may change when asked to (`accept_changes`, the CLIs' --accept_changes): they change the
# values the next updates use, never the shape of the saved state or the order of the data, so the latest
# checkpoint restores as it was saved and the run goes on from it with the new values (a diverged run continued
# from its last finite checkpoint with a lower learning rate, say). Not among them: grad_clip_norm (0 drops the
# clipping from the optimiser's state), the seed, the batch size, the data, the model.
ADJUSTABLE_FIELDS = ("config.optim.learning_rate", "config.optim.warmup_steps", "config.optim.warmup_fraction",
                     "config.optim.schedule", "config.optim.end_lr_fraction", "config.optim.weight_decay",
                     "config.optim.b1", "config.optim.b2", "config.optim.eps", "config.train.epochs",
                     "config.train.num_steps", "num_steps")
CHANGES_KEY = "changes"  # meta entry: [{"step": int, "fields": {field: [saved, now]}}], each accepted change
# What a field absent from a saved checkpoint meant when it was written (the field came later): the channel
# policy did not exist and every reader took the channel mean (asd_jax.audio.channels.LEGACY); fine-tuning held
# no clip out and augmented nothing (configs/common.py's defaults); the single-encoder ArcFace head had one
# centre per class, and every run trained on the supplementary recordings too. A leaf (`config.loss.
# num_subclusters`) counts too when it is compared as part of a wider field (`config.loss`).
LEGACY_VALUES = {"config.data.channels": channels.LEGACY, "config.train.holdout_fraction": 0.0,
                 "config.augment": {"mixup_prob": 0.0, "time_masks": 0, "time_width": 0, "freq_masks": 0,
                                    "freq_width": 0},
                 "config.loss.num_subclusters": 1, "config.data.supplemental": True}


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
                   *, hint: str = "", accept_changes: bool = False) -> dict[str, tuple[Any, Any]]:
  """Raises ValueError naming `directory` and each differing field (saved vs now) of `fields`.

  `fields` are dotted paths into the metadata (`"config.lora"` compares every field under it, one line per
  leaf; `"num_steps"` a single value); a field missing on one side shows as `<absent>`, except that a saved
  checkpoint without a field of `LEGACY_VALUES` compares as that field's value before it existed. With
  `accept_changes`, differences in `ADJUSTABLE_FIELDS` are accepted and returned (`{field: (saved, now)}`);
  without it, a refusal whose differences are all adjustable says so.
  """
  saved, now = {}, {}
  for field in fields:
    value = _lookup(saved_meta, field)
    if value is _ABSENT and field in LEGACY_VALUES:
      value = LEGACY_VALUES[field]
    saved.update(_flatten(field, value))
    now.update(_flatten(field, _lookup(meta, field)))
  for leaf, value in LEGACY_VALUES.items():  # a later field inside a saved dict that was compared whole
    if leaf in now and leaf not in saved and any(leaf.startswith(f + ".") for f in fields):
      saved[leaf] = value
  differing = [f for f in sorted(set(saved) | set(now)) if saved.get(f, _ABSENT) != now.get(f, _ABSENT)]
  adjustable = [f for f in differing if f in ADJUSTABLE_FIELDS]
  refused = [f for f in differing if f not in ADJUSTABLE_FIELDS or not accept_changes]
  if refused:
    lines = [f"checkpoint {directory} does not match this run's settings:"]
    lines += [_describe(f, saved.get(f, _ABSENT), now.get(f, _ABSENT)) for f in refused]
    if refused == adjustable:
      lines.append("Each of these may change on a resume: run again with --accept_changes (accept_changes=True) "
                   "to continue from the latest checkpoint with the new values.")
    raise ValueError("\n".join(lines + ([hint] if hint else [])))
  return {f: (saved.get(f), now.get(f)) for f in adjustable}


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or eval_shape output) placed with `sharding`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
