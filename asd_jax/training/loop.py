"""The host side of a training run: its workdir, the resume checks, and the loop (fine-tuning and pre-training).

A run's workdir holds `checkpoints/` (`asd_jax.checkpoints.train_state`), `config.json` and `metrics.jsonl`
(`train_log`). `checkpointer(...)` opens the checkpoints after the checks a resume needs, before any compute:
`--noresume` refuses a workdir with checkpoints, and the latest checkpoint must have been written with the same
settings (the run's fields; with `accept_changes`, `train_state.ADJUSTABLE_FIELDS` such as the learning rate
may differ, and each accepted change is logged and recorded in the checkpoints' metadata) and on the same data:
a run records the content digest of every clip it reads (`CLIPS_KEY`, `clips_entry`), and a resume onto clips
added, removed or changed since is refused, naming them (`check_same_clips`). `train(...)` writes `config.json`
and runs `fit`.

`fit` owns everything that is not pure: it resumes from the latest checkpoint (state and input-iterator
position), compiles the step once ahead of time (compile time is logged on its own), feeds sharded batches,
shows a tqdm bar with the loss, chosen metrics, step time and speed (`autotune.speed`), appends metrics to
`metrics.jsonl`, and saves periodic checkpoints. Because the step is pure and its rng is folded with the step
counter, a run killed after any checkpoint and resumed gives the same parameters as one that never stopped. A
resumed run first drops the rows of `metrics.jsonl` past the step it resumes from (written after that
checkpoint by the run that was killed) and the compile row of a killed invocation that started there
(`train_log.MetricWriter.drop_after`), so every step has one row and one compile row at most. A step whose
loss, gradients or new state are not finite (`train_step.FINITE`, computed inside the step) stops the run with
`NonFiniteError` naming the step and the last checkpoint, and saying how to go on; that state is never saved,
so a divergence never replaces a finite checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import jax
import numpy as np
import tqdm
from absl import logging
from jax.sharding import Mesh

from asd_jax import atomic
from asd_jax.checkpoints import train_state
from asd_jax.data import digest
from asd_jax.runtime import autotune
from asd_jax.runtime import prefetch as prefetch_lib
from asd_jax.runtime import sharding as shd
from asd_jax.training import train_log
from asd_jax.training import train_step as ts


CHECKPOINTS = "checkpoints"  # the run's Orbax checkpoints, below its workdir
CONFIG = "config.json"  # the run's config as it was last run
CLIPS_KEY = "clips"  # meta entry: the data the run reads, `clips_entry`


def clips_entry(table: dict[str, str], where: str) -> dict[str, Any]:
  """The `CLIPS_KEY` entry of a run reading the files of `table` (`digest.file_table`: {name: content SHA-256},
  names relative to `where`, the dataset or corpus as a message names it): `{"where", "digest", "files"}`."""
  return {"where": where, "digest": digest.table_digest(table), "files": table}


class DataChangedError(ValueError):
  """A resume onto other clips than the checkpoint's run read (added, removed or changed in content)."""


def check_same_clips(directory: str, step: int, saved: dict[str, Any] | None, now: dict[str, Any] | None) -> None:
  """Raises `DataChangedError` naming the clips that differ between the `CLIPS_KEY` entries `saved` (the
  checkpoint's) and `now`; a checkpoint written before runs recorded their clips is resumed with a warning."""
  if now is None or (saved is not None and saved["digest"] == now["digest"]):
    return
  if saved is None:
    logging.warning("%s: its checkpoints do not record the clips they were trained on (an older asd_jax): a "
                    "changed dataset cannot be detected", directory)
    return
  changes = digest.compare(saved["files"], now["files"])
  raise DataChangedError(
      f"checkpoint {directory} (step {step}) was trained on other clips than this run reads ({now['where']}): "
      f"{changes.describe() if changes else 'the same clips in another order'}\nResuming would continue the run "
      "on other data (and a changed clip list reorders every batch). Put the clips back as they were, or start "
      "afresh in a new --workdir.")


def checkpoint_dir(workdir: str) -> str:
  """`<workdir>/checkpoints`, absolute."""
  return os.path.join(os.path.abspath(workdir), CHECKPOINTS)


def latest_step(workdir: str) -> int | None:
  """The latest checkpoint step of the run in `workdir`, None without one."""
  if not os.path.isdir(checkpoint_dir(workdir)):
    return None
  ckpt = train_state.Checkpointer(checkpoint_dir(workdir))
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


@contextlib.contextmanager
def checkpointer(workdir: str, meta: dict[str, Any], fields: tuple[str, ...], *, keep: int, resume: bool = True,
                 accept_changes: bool = False, refuse_empty: str = "") -> Iterator[train_state.Checkpointer]:
  """The `Checkpointer` of the run in `workdir`, after the checks a resume needs (closed on exit).

  With checkpoints there: refused unless `resume`, and their latest metadata must match `meta` in `fields`
  (`train_state.check_same_run`) and in its clips (`check_same_clips`, when `meta` has a `CLIPS_KEY` entry);
  with `accept_changes` the adjustable differences are accepted, logged, and
  recorded under `train_state.CHANGES_KEY` in `meta` (so the next checkpoints carry them). Without any,
  `refuse_empty` (when set) is raised as FileNotFoundError (a run that only reads its checkpoints).
  """
  ckpt = train_state.Checkpointer(checkpoint_dir(workdir), keep=keep)
  try:
    latest = ckpt.latest_step()
    if latest is not None:
      if not resume:
        raise FileExistsError(f"{ckpt.directory} already holds checkpoints (latest step {latest}); use a new "
                              "--workdir or drop --noresume to continue it")
      saved = ckpt.restore_meta()
      changes = train_state.check_same_run(ckpt.directory, saved, meta, fields, accept_changes=accept_changes, hint=(
          f"Resume with the saved settings ({os.path.join(workdir, CONFIG)}) or use a new --workdir."))
      check_same_clips(ckpt.directory, latest, saved.get(CLIPS_KEY), meta.get(CLIPS_KEY))
      history = list(saved.get(train_state.CHANGES_KEY, []))
      if changes:
        for field, (before, after) in changes.items():
          logging.warning("%s: continuing from step %d with %s=%r (was %r)", ckpt.directory, latest, field, after,
                          before)
        history.append({"step": latest, "fields": {f: list(v) for f, v in changes.items()}})
      if history:
        meta[train_state.CHANGES_KEY] = history
    elif refuse_empty:
      raise FileNotFoundError(f"{refuse_empty}: no checkpoint in {ckpt.directory}")
    yield ckpt
  finally:
    ckpt.close()


def write_config(workdir: str, config: Any) -> None:
  """`<workdir>/config.json` (process 0, atomically): the settings the run was last run with."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    atomic.write_text(os.path.join(workdir, CONFIG), config.to_json_best_effort(indent=2))


def train(setup: ts.TrainSetup, batches: CheckpointableIterator, *, workdir: str,
          checkpointer: train_state.Checkpointer, **fit_options: Any) -> ts.TrainState:
  """`fit` of `setup` with the run's `metrics.jsonl` open (written after `write_config`)."""
  writer = train_log.MetricWriter(workdir)
  try:
    return fit(setup.state, setup.train_step(), batches, checkpointer=checkpointer, writer=writer, **fit_options)
  finally:
    writer.close()


class NonFiniteError(ValueError):
  """A training step produced a non-finite loss, gradient or state (nothing of it was saved)."""


class CheckpointableIterator(Protocol):
  """An endless batch iterator whose position can be saved and restored (Grain iterators are)."""

  def __next__(self) -> dict[str, np.ndarray]: ...

  def get_state(self) -> Any: ...

  def set_state(self, state: Any) -> None: ...


def fit(state: ts.TrainState, train_step: Callable, batches: CheckpointableIterator, *, num_steps: int,
        mesh: Mesh, rng: jax.Array, checkpointer: train_state.Checkpointer | None = None,
        checkpoint_every: int = 0, meta: dict[str, Any] | None = None,
        writer: train_log.MetricWriter | None = None, log_every: int = 10, steps_per_epoch: int | None = None,
        progress: bool = True, stop_after: int | None = None,
        shown_metrics: tuple[str, ...] = ("accuracy",), donate: bool = True, prefetch: int = 2,
        evaluate: Callable[[ts.TrainState], dict[str, Any]] | None = None, evaluate_every: int = 0
        ) -> ts.TrainState:
  """Trains `state` until `state.step == num_steps` and returns it (replicated over `mesh`).

  Args:
    state: freshly initialised state; replaced by the latest checkpoint in `checkpointer` if there is one.
    train_step: the pure step (`make_train_step`), jitted here with the mesh's shardings.
    batches: endless iterator of process-local numpy batches `{"wav": [b, samples], ("label": [b]), ...}`.
    num_steps: total number of updates of the run (over all epochs).
    mesh: the data-parallel mesh; state and rng are replicated, batches split over its "data" axis.
    rng: base key; step `i` uses `fold_in(rng, i)` inside the step.
    checkpointer, checkpoint_every, meta: save every `checkpoint_every` steps and at the end, with `meta`.
    writer: metrics sink; `log_every`: steps between metric rows (every metric of the step; the bar
      updates every step and shows the loss and the `shown_metrics` the step returns).
    stop_after: stop (after saving) once this many steps ran in this call: simulates a killed job in tests.
    donate: let the step reuse the state's buffers for the new state (same results, one copy less).
    prefetch: batches read and put on the devices ahead of the step by a background thread (0 = none);
      checkpoints still record the position of the batch the last step used.
    evaluate: `state -> {name: value}` run every `evaluate_every` steps (0: only after the last step) and after
      the last step, its values written with the step's metrics (e.g. held-out accuracy,
      `asd_jax.finetuning.holdout`); it must not change the state. The last step's row is written before the final
      checkpoint, so a run that has its final checkpoint has its final evaluation.
  """
  state = shd.replicate(state, mesh)
  rng = shd.replicate(rng, mesh)
  batches = prefetch_lib.DevicePrefetcher(batches, lambda b: shd.put_batch(b, mesh), size=prefetch)
  if checkpointer is not None and checkpointer.latest_step() is not None:
    abstract = train_state.abstract_like(state, shd.replicated(mesh))
    # The newest readable step: a damaged latest one is reported, moved aside, and the run resumes before it.
    state, iterator_state, _ = checkpointer.restore(abstract, fall_back=True)
    batches.set_state(iterator_state)
    logging.info("resumed from %s at step %d", checkpointer.directory, int(state.step))
  start = int(state.step)
  if writer is not None:
    writer.drop_after(start)
  if start >= num_steps:
    return state

  jitted = ts.jit_train_step(train_step, mesh, donate=donate)
  batch = next(batches)
  clips = int(batch["wav"].shape[0])  # global clips per step (fine-tuning and pre-training batches have "wav")
  t0 = time.perf_counter()
  compiled = jitted.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t0
  logging.info("train step compiled in %.1f s", compile_s)
  if writer is not None:
    writer.write(start, {train_log.COMPILE: compile_s, **({"resumed": True} if start else {})})

  def save(step: int) -> None:
    if checkpointer is not None:
      checkpointer.save(step, state, batches.get_state(), meta or {})

  def refuse(step: int, metrics: dict[str, Any]) -> NonFiniteError:
    saved = checkpointer.latest_step() if checkpointer is not None else None
    where = f"the last checkpoint is step {saved} in {checkpointer.directory}" if saved is not None else (
        "no checkpoint was written")
    go_on = (f"To continue from step {saved} with other settings (a lower config.optim.learning_rate, say), run "
             "again with them and --accept_changes" if saved is not None else "To train again, lower "
             "config.optim.learning_rate")
    return NonFiniteError(
        f"training diverged at step {step}: loss {metrics['loss']}, gradient norm {metrics.get('grad_norm')} "
        f"(a non-finite loss, gradient or parameter); nothing of this step is saved, {where}. {go_on}; or "
        "start afresh in a new workdir. Check the data and the initial checkpoint too")

  bar = tqdm.tqdm(total=num_steps, initial=start, disable=not progress or jax.process_index() != 0,
                  unit="step", dynamic_ncols=True)
  ran = 0
  step = start
  try:
    while True:
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch, rng)
      metrics = jax.device_get(metrics)  # Waits for the step: the time below is the step's.
      step_s = time.perf_counter() - t0
      step, ran = step + 1, ran + 1
      finite = bool(metrics.pop(ts.FINITE, True))
      if not finite:
        if writer is not None:
          writer.write(step, metrics)
        raise refuse(step, metrics)
      shown = {"loss": f"{metrics['loss']:.4f}",
               **{name: f"{metrics[name]:.3f}" for name in shown_metrics if name in metrics},
               "step_s": f"{step_s:.3f}", "speed": autotune.speed(clips, step_s)}
      bar.set_postfix(shown, refresh=False)
      bar.update(1)
      evaluated = {}
      if evaluate is not None and (step == num_steps or (evaluate_every and step % evaluate_every == 0)):
        evaluated = evaluate(state)
      if writer is not None and (step % log_every == 0 or step == num_steps or evaluated):
        row = {**metrics, "step_s": step_s, "clips_per_s": clips / step_s, **evaluated}
        if steps_per_epoch:
          row["epoch"] = step / steps_per_epoch
        writer.write(step, row)
      done = step >= num_steps or (stop_after is not None and ran >= stop_after)
      if done or (checkpoint_every and step % checkpoint_every == 0):
        save(step)
      if done:
        break
      batch = next(batches)
  finally:
    bar.close()
    batches.close()
    if checkpointer is not None:
      checkpointer.wait()
  return state

