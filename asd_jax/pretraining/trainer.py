"""An EAT pre-training run from a config: model and objective settings, initial state, data, loop, export.

`pretrain(config, workdir)` (the `asd_jax.pretrain` CLI) builds the `PretrainingConfig` from
`config.model` (encoder preset or `init_checkpoint`) and `config.{decoder,mask,targets,ema,pretrain}`,
starts from scratch (upstream's initialisation, teacher = student) or continues a released EAT
checkpoint (a fairseq pretraining `.pt`: student, `_ema` teacher and decoder; or any `eat.load` form:
student only, teacher copied from it, new decoder), and trains with the shared host loop
(`asd_jax.training.loop.fit`: one compiled step, data-parallel over the mesh, tqdm bar, `metrics.jsonl`,
Orbax checkpoints with state, teacher and data position; resuming is bit-identical). At the end (or with
`export_only`) the student encoder is written as a converted EAT checkpoint, `<workdir>/encoder`, which
`eat.load` and the fine-tuning configs read (`--config.model.init_checkpoint=<workdir>/encoder`);
`export_teacher` also writes the teacher to `<workdir>/teacher`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Any

import jax
import ml_collections

from asd_jax import atomic
from asd_jax import config_checks
from asd_jax import workdir_lock
from asd_jax.audio import fbank as fbank_lib
from asd_jax.audio import padded_fbank
from asd_jax.checkpoints import converted
from asd_jax.models import eat
from asd_jax.models import eat_decoder
from asd_jax.runtime import sharding as shd
from asd_jax.pretraining import config as config_lib
from asd_jax.pretraining import ema as ema_lib
from asd_jax.pretraining import masking
from asd_jax.pretraining import train_step as pts
from asd_jax.checkpoints import train_state
from asd_jax.models import networks
from asd_jax.training import loop
from asd_jax.training import optimizer
from asd_jax.training import train_log

ENCODER_DIR = "encoder"
TEACHER_DIR = "teacher"
# What a checkpoint's run is: resuming with other values would continue one run with another's settings.
RUN_FIELDS = ("config.seed", "config.model", "config.decoder", "config.mask", "config.targets", "config.ema",
              "config.pretrain", "config.optim", "config.train.batch_size", "config.train.num_steps",
              "config.data.sources", "config.data.sample_rate", "config.data.clip_seconds")
PROGRESS_METRICS = ("loss_regression", "loss_cls", "target_var", "pred_var")


def fbank_frames(config: ml_collections.ConfigDict) -> int:
  """Fbank frames per clip: `config.model.target_length`, or (0) the clip's frames rounded up to 16."""
  if config.model.target_length:
    return int(config.model.target_length)
  samples = int(round(config.data.clip_seconds * config.data.sample_rate))
  frames = fbank_lib.EAT_FBANK.num_frames(samples)
  return int(math.ceil(frames / 16) * 16)


def frontend(config: ml_collections.ConfigDict):
  """Jittable `batch -> EAT fbank [batch, fbank_frames, 128]` of `{"wav": [batch, samples], "valid_samples"}`.

  Rows are zero-padded clips (`asd_jax.data.corpus`, pad="eat"); `valid_samples` (when the batch has it) says
  where each clip's audio ends, and the fbank is the clip's own fbank with EAT's zero frames after it
  (`asd_jax.audio.padded_fbank`), as upstream pads a short clip.
  """
  fb = dataclasses.replace(fbank_lib.EAT_FBANK, sample_rate=config.data.sample_rate,
                           target_length=fbank_frames(config))

  def batch_fbank(batch):
    if "valid_samples" in batch:
      return padded_fbank.fbank_of_padded(batch["wav"], batch["valid_samples"], fb)
    return fbank_lib.fbank(batch["wav"], config=fb)

  return batch_fbank


def replica_batch(config: ml_collections.ConfigDict) -> int | None:
  """Clips per upstream GPU for the CLS-loss normalisation (`config.pretrain.replica_batch`; 0 = whole batch)."""
  size = config.pretrain.replica_batch
  if not size:
    return None
  if config.train.batch_size % size:
    raise ValueError(f"config.pretrain.replica_batch={size} does not divide config.train.batch_size="
                     f"{config.train.batch_size}")
  return int(size)


def _objective_settings(config: ml_collections.ConfigDict, encoder: eat.EATConfig) -> config_lib.PretrainingConfig:
  return config_lib.PretrainingConfig(
      encoder=encoder, decoder=eat_decoder.DecoderConfig(**config.decoder.to_dict()),
      targets=config_lib.TargetConfig(**config.targets.to_dict()), mask=masking.MaskConfig(**config.mask.to_dict()),
      ema=ema_lib.EmaConfig(**config.ema.to_dict()), clone_batch=config.pretrain.clone_batch,
      mask_noise_std=config.pretrain.mask_noise_std)


def initial_model(config: ml_collections.ConfigDict, rng: jax.Array, *, abstract: bool = False):
  """`(PretrainingConfig, student, teacher, decoder, source)`: from `config.model.init_checkpoint` or new.

  A fairseq `.pt` gives all three (its decoder must match `config.decoder`); another EAT checkpoint gives the
  student (teacher = student, new decoder); none gives upstream's random initialisation.
  """
  path = config.model.init_checkpoint
  frames = fbank_frames(config)
  if path and str(path).endswith(".pt"):
    loaded = eat.load_fairseq_pretraining(path)
    settings = _objective_settings(config, loaded.config)
    if loaded.decoder_config != settings.decoder:
      raise ValueError(f"{path}: its decoder {loaded.decoder_config} differs from config.decoder "
                       f"{settings.decoder}; set config.decoder to the checkpoint's")
    return settings, loaded.student, loaded.teacher, loaded.decoder, str(path)
  if path:
    encoder, student = eat.load(path)
    settings = _objective_settings(config, encoder)
    _, decoder = pts.init_params(rng, settings, frames)
    return settings, student, student, decoder, str(path)
  settings = _objective_settings(config, config_lib.PRESETS[config.model.preset].encoder)
  init = lambda: pts.init_params(rng, settings, frames)  # noqa: E731
  student, decoder = jax.eval_shape(init) if abstract else jax.jit(init)()
  return settings, student, student, decoder, "random init"


def build(config: ml_collections.ConfigDict, rng: jax.Array, *, abstract: bool = False):
  """`(settings, state, train_step, labels, source)` of a run of `config.train.num_steps` updates."""
  settings, student, teacher, decoder, source = initial_model(config, rng, abstract=abstract)
  params = {"student": student, "decoder": decoder}
  labels = pts.trainable_labels(params)
  tx, schedule = optimizer.make_optimizer(config.optim, config.train.num_steps, labels)
  if abstract:
    state = jax.eval_shape(lambda s, t, d: pts.create_state(s, t, d, tx), student, teacher, decoder)
  else:
    state = pts.create_state(student, teacher, decoder, tx)
  dtype = networks.compute_dtype(config.model.dtype)
  step = pts.make_train_step(settings, tx, frontend=frontend(config), frames=fbank_frames(config), dtype=dtype,
                             schedule=schedule, labels=labels, replica_batch=replica_batch(config),
                             encoder_options=networks.encoder_options(config.model))
  return settings, state, step, labels, source


def export(state: Any, settings: config_lib.PretrainingConfig, workdir: str, *, teacher: bool = False
           ) -> list[pathlib.Path]:
  """Writes the student (and with `teacher` the teacher) as converted EAT checkpoints under `workdir`."""
  if jax.process_index() != 0:
    return []
  params = jax.device_get(state.params["student"])
  written = [eat.save_converted(os.path.join(workdir, ENCODER_DIR), settings.encoder, params)]
  if teacher:
    written.append(eat.save_converted(os.path.join(workdir, TEACHER_DIR), settings.encoder,
                                      jax.device_get(state.extra["teacher"])))
  return written


def summary(settings: config_lib.PretrainingConfig, state: Any) -> str:
  count = converted.count_params
  rows = [("student", count(state.params["student"])), ("teacher (EMA)", count(state.extra["teacher"])),
          ("decoder", count(state.params["decoder"]))]
  enc = settings.encoder
  lines = [f"EAT {enc.depth} x {enc.embed_dim}, decoder {settings.decoder.decoder_layers} x "
           f"{settings.decoder.decoder_dim} (kernel {settings.decoder.decoder_kernel}), "
           f"{settings.clone_batch} masked views per clip"]
  lines += [f"  {name:<14} {n:>13,}" for name, n in rows]
  return "\n".join(lines)


def run_meta(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a checkpoint records of its run (compared field by field on resume, `RUN_FIELDS`)."""
  return {"config": json.loads(config.to_json_best_effort()), "num_steps": config.train.num_steps}


def _check_same_run(ckpt: train_state.Checkpointer, meta: dict[str, Any], workdir: str) -> None:
  train_state.check_same_run(ckpt.directory, ckpt.restore_meta(), meta, RUN_FIELDS, hint=(
      f"Continue with the saved settings ({os.path.join(workdir, 'config.json')}) or use a new workdir."))


def is_complete(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Whether `workdir` holds a finished run of `config` (all `num_steps` and the exported encoder).

  Cheap (metadata only, no compilation). A finished run with other settings raises ValueError naming the
  fields, as resuming it would.
  """
  workdir = os.path.abspath(workdir)
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory) or not os.path.isdir(os.path.join(workdir, ENCODER_DIR)):
    return False
  ckpt = train_state.Checkpointer(directory, keep=config.train.keep_checkpoints)
  try:
    step = ckpt.latest_step()
    if step is None:
      return False
    _check_same_run(ckpt, run_meta(config), workdir)
    return step >= config.train.num_steps
  finally:
    ckpt.close()


def pretrain(config: ml_collections.ConfigDict, workdir: str, *, dry_run: bool = False, resume: bool = True,
             export_only: bool = False, export_teacher: bool = False, progress: bool = True,
             stop_after: int | None = None):
  """Runs (or with `dry_run` only describes) the pre-training of `config` in `workdir`; returns the state.

  `export_only` writes the encoder(s) of the latest checkpoint without training. `stop_after` (tests) stops
  after this many steps of this call, with a checkpoint, as if the job had been killed there.
  """
  config_checks.check(config)
  workdir = os.path.abspath(workdir)
  shd.initialize_distributed(config.train.distributed)
  if dry_run:
    return _run(config, workdir, dry_run=True)
  # Locked first: a second run on the workdir is refused before Orbax opens (and cleans up) its folder.
  with workdir_lock.hold(workdir, "pretrain", enabled=jax.process_index() == 0):
    return _run(config, workdir, resume=resume, export_only=export_only, export_teacher=export_teacher,
                progress=progress, stop_after=stop_after)


def _run(config: ml_collections.ConfigDict, workdir: str, *, dry_run: bool = False, resume: bool = True,
         export_only: bool = False, export_teacher: bool = False, progress: bool = True,
         stop_after: int | None = None):
  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  if dry_run:
    settings, state, _, _, source = build(config, init_rng, abstract=True)
    print(summary(settings, state) + f"\n  from: {source}")
    return None

  ckpt = train_state.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  writer = None
  try:
    meta = run_meta(config)
    if ckpt.latest_step() is not None:  # checked before any compute: a refused resume costs nothing
      if not resume and not export_only:
        raise FileExistsError(f"{ckpt.directory} already holds checkpoints (latest step {ckpt.latest_step()}); "
                              "use a new --workdir or drop --noresume to continue it")
      _check_same_run(ckpt, meta, workdir)
    elif export_only:
      raise FileNotFoundError(f"--export_only: no checkpoint in {ckpt.directory}")
    settings, state, step, _, source = build(config, init_rng)
    meta["pretraining_config"] = settings.to_dict()
    meta["init"] = source
    mesh = shd.data_mesh()
    if export_only:
      abstract = train_state.abstract_like(state, shd.replicated(mesh))
      state, _, _ = ckpt.restore(abstract)
      for path in export(state, settings, workdir, teacher=export_teacher):
        print(f"wrote {path}")
      return state
    print(summary(settings, state) + f"\n  from: {source}")
    from asd_jax.data import corpus  # the one function of the data layer this trainer uses

    shd.check_batch_size(config.train.batch_size, mesh)
    batches, num_clips = corpus.pretraining_batches(config.data, batch_size=config.train.batch_size,
                                                    seed=config.seed)
    meta["num_clips"] = num_clips
    if jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      atomic.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
    writer = train_log.MetricWriter(workdir)
    state = loop.fit(state, step, batches, num_steps=config.train.num_steps, mesh=mesh, rng=step_rng,
                     checkpointer=ckpt, checkpoint_every=config.train.checkpoint_every, meta=meta, writer=writer,
                     log_every=config.train.log_every, steps_per_epoch=max(num_clips // config.train.batch_size, 1),
                     progress=progress, stop_after=stop_after, shown_metrics=PROGRESS_METRICS,
                     donate=config.train.donate, prefetch=config.data.prefetch)
    if int(state.step) >= config.train.num_steps:
      for path in export(state, settings, workdir, teacher=export_teacher):
        print(f"wrote {path}")
  finally:
    if writer is not None:
      writer.close()
    ckpt.close()
  return state
