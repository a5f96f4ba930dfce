"""An EAT pre-training run from a config: the library behind `python -m asd_jax.pretrain`.

`pretrain(config, workdir)` builds the `PretrainingConfig` from `config.model` (encoder preset or
`init_checkpoint`) and `config.{decoder,mask,targets,ema,pretrain}`, starts from scratch (upstream's
initialisation, teacher = student) or continues a released EAT checkpoint (a fairseq pretraining `.pt`:
student, `_ema` teacher and decoder; or any `eat.load` form: student only, teacher copied from it, new decoder),
and trains through the generic trainer as fine-tuning does (`asd_jax.training`: the one train step with the
EAT loss and its EMA teacher of `asd_jax.pretraining.loss`, data-parallel over the mesh, tqdm bar,
`metrics.jsonl`, Orbax checkpoints with state, teacher and data position; resuming is bit-identical; a
non-finite step stops the run naming it, and nothing of it is saved). At the end (or with `export_only`) the
student encoder is written as a converted EAT checkpoint, `<workdir>/encoder`, which `eat.load` and the
fine-tuning configs read (`--config.model.init_checkpoint=<workdir>/encoder`); `export_teacher` also writes
the teacher to `<workdir>/teacher`. The last step's row of `metrics.jsonl` also has `teacher_change`, the
teacher's relative change from its start (`asd_jax.pretraining.health`: a teacher that did not move gave the
initial network's targets for the whole run; the pipeline warns from it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
from typing import Any

import jax
import ml_collections

from asd_jax import config_checks
from asd_jax import workdir_lock
from asd_jax.audio import fbank as fbank_lib
from asd_jax.audio import padded_fbank
from asd_jax.checkpoints import train_state
from asd_jax.data import digest
from asd_jax.models import eat
from asd_jax.models import eat_decoder
from asd_jax.models import networks
from asd_jax.pretraining import config as config_lib
from asd_jax.pretraining import ema as ema_lib
from asd_jax.pretraining import health
from asd_jax.pretraining import loss as loss_lib
from asd_jax.pretraining import masking
from asd_jax.runtime import sharding as shd
from asd_jax.training import loop
from asd_jax.training import optimizer
from asd_jax.training import train_step as ts

ENCODER_DIR = "encoder"
TEACHER_DIR = "teacher"
# What a checkpoint's run is: resuming with other values would continue one run with another's settings.
RUN_FIELDS = ("config.seed", "config.model", "config.decoder", "config.mask", "config.targets", "config.ema",
              "config.pretrain", "config.optim", "config.train.batch_size", "config.train.num_steps",
              "config.data.sources", "config.data.sample_rate", "config.data.clip_seconds", "config.data.channels")
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
    _, decoder = loss_lib.init_params(rng, settings, frames)
    return settings, student, student, decoder, str(path)
  settings = _objective_settings(config, config_lib.PRESETS[config.model.preset].encoder)
  init = lambda: loss_lib.init_params(rng, settings, frames)  # noqa: E731
  student, decoder = jax.eval_shape(init) if abstract else jax.jit(init)()
  return settings, student, student, decoder, "random init"


def build(config: ml_collections.ConfigDict, rng: jax.Array, *, abstract: bool = False
          ) -> tuple[config_lib.PretrainingConfig, ts.TrainSetup, str]:
  """`(settings, setup, source)` of a run of `config.train.num_steps` updates: the objective's settings, the
  initial state with its step's pieces (`TrainSetup`: the EAT loss, `update_teacher`), and where the
  encoder came from."""
  settings, student, teacher, decoder, source = initial_model(config, rng, abstract=abstract)
  labels = loss_lib.trainable_labels({"student": student, "decoder": decoder})
  tx, schedule = optimizer.make_optimizer(config.optim, config.train.num_steps, labels)
  if abstract:
    state = jax.eval_shape(lambda s, t, d: loss_lib.create_state(s, t, d, tx), student, teacher, decoder)
  else:
    state = loss_lib.create_state(student, teacher, decoder, tx)
  loss = loss_lib.make_loss(settings, frontend=frontend(config), frames=fbank_frames(config),
                            dtype=networks.compute_dtype(config.model.dtype), replica_batch=replica_batch(config),
                            encoder_options=networks.encoder_options(config.model))
  update_teacher = functools.partial(loss_lib.update_teacher, config=settings)
  return settings, ts.TrainSetup(state=state, labels=labels, tx=tx, loss=loss, update_extra=update_teacher,
                                 schedule=schedule), source


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


def summary(settings: config_lib.PretrainingConfig, setup: ts.TrainSetup) -> str:
  """The model's sizes and the parameter counts of student, decoder and teacher ("extra/teacher", never trained)."""
  enc = settings.encoder
  return (f"EAT {enc.depth} x {enc.embed_dim}, decoder {settings.decoder.decoder_layers} x "
          f"{settings.decoder.decoder_dim} (kernel {settings.decoder.decoder_kernel}), "
          f"{settings.clone_batch} masked views per clip\n"
          + optimizer.format_summary(setup.state.params, setup.labels, setup.state.extra, depth=1))


def run_meta(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a checkpoint records of its run (compared field by field on resume, `RUN_FIELDS`)."""
  return {"config": json.loads(config.to_json_best_effort()), "num_steps": config.train.num_steps}


def is_complete(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Whether `workdir` holds a finished run of `config` (all `num_steps` and the exported encoder).

  Cheap (metadata only, no compilation). A finished run with other settings raises ValueError naming the
  fields, as resuming it would.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(loop.checkpoint_dir(workdir)) or not os.path.isdir(os.path.join(workdir, ENCODER_DIR)):
    return False
  with loop.checkpointer(workdir, run_meta(config), RUN_FIELDS, keep=config.train.keep_checkpoints) as ckpt:
    step = ckpt.latest_step()
    return step is not None and step >= config.train.num_steps


def pretrain(config: ml_collections.ConfigDict, workdir: str, *, dry_run: bool = False, resume: bool = True,
             accept_changes: bool = False, export_only: bool = False, export_teacher: bool = False,
             progress: bool = True, stop_after: int | None = None) -> ts.TrainState | None:
  """Runs (or with `dry_run` only describes) the pre-training of `config` in `workdir`; returns the state.

  `accept_changes` continues a run whose latest checkpoint was written with other optimiser settings or
  `num_steps` (`train_state.ADJUSTABLE_FIELDS`: a diverged run from its last finite checkpoint with a lower
  learning rate, say). `export_only` writes the encoder(s) of the latest checkpoint without training.
  `stop_after` (tests) stops after this many steps of this call, with a checkpoint, as if the job had been
  killed there.
  """
  config_checks.check(config)
  workdir = os.path.abspath(workdir)
  shd.initialize_distributed(config.train.distributed)
  if dry_run:
    settings, setup, source = build(config, jax.random.split(jax.random.key(config.seed))[0], abstract=True)
    print(summary(settings, setup) + f"\n  from: {source}")
    return None
  # Locked first: a second run on the workdir is refused before Orbax opens (and cleans up) its folder.
  with workdir_lock.hold(workdir, "pretrain", enabled=jax.process_index() == 0):
    return _pretrain(config, workdir, resume=resume, accept_changes=accept_changes, export_only=export_only,
                     export_teacher=export_teacher, progress=progress, stop_after=stop_after)


def _pretrain(config: ml_collections.ConfigDict, workdir: str, *, resume: bool, accept_changes: bool,
              export_only: bool, export_teacher: bool, progress: bool, stop_after: int | None) -> ts.TrainState:
  from asd_jax.data import corpus  # pylint: disable=g-import-not-at-top  (Grain: only a run that trains needs it)

  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  meta = run_meta(config)
  if not export_only:  # the corpus's digests, compared with the checkpoint's on resume (`loop.check_same_clips`)
    table, where = corpus.file_table(config.data, os.path.join(workdir, digest.CACHE_FILE),
                                     save=jax.process_index() == 0)
    meta[loop.CLIPS_KEY] = loop.clips_entry(table, where)
  # Checked before any compute: a refused resume costs nothing.
  with loop.checkpointer(workdir, meta, RUN_FIELDS, keep=config.train.keep_checkpoints,
                         resume=resume or export_only, accept_changes=accept_changes,
                         refuse_empty="--export_only" if export_only else "") as ckpt:
    settings, setup, source = build(config, init_rng)
    meta["pretraining_config"] = settings.to_dict()
    meta["init"] = source
    mesh = shd.data_mesh()
    if export_only:
      state, _, _ = ckpt.restore(train_state.abstract_like(setup.state, shd.replicated(mesh)))
      for path in export(state, settings, workdir, teacher=export_teacher):
        print(f"wrote {path}")
      return state
    print(summary(settings, setup) + f"\n  from: {source}")
    shd.check_batch_size(config.train.batch_size, mesh)
    batches, num_clips = corpus.pretraining_batches(config.data, batch_size=config.train.batch_size,
                                                    seed=config.seed)
    meta["num_clips"] = num_clips
    loop.write_config(workdir, config)
    # The starting teacher, on the host (the step donates the state's buffers): the last step logs how far the
    # teacher moved from it (a resumed run rebuilds the same start from the seed or checkpoint).
    start_teacher = jax.device_get(setup.state.extra["teacher"])

    def teacher_change(state: ts.TrainState) -> dict[str, float]:
      return {health.TEACHER_CHANGE: health.relative_change(start_teacher, jax.device_get(state.extra["teacher"]))}

    state = loop.train(setup, batches, workdir=workdir, checkpointer=ckpt, num_steps=config.train.num_steps,
                       mesh=mesh, rng=step_rng, checkpoint_every=config.train.checkpoint_every, meta=meta,
                       log_every=config.train.log_every,
                       steps_per_epoch=max(num_clips // config.train.batch_size, 1), progress=progress,
                       stop_after=stop_after, shown_metrics=PROGRESS_METRICS, donate=config.train.donate,
                       prefetch=config.data.prefetch, evaluate=teacher_change)
    if int(state.step) >= config.train.num_steps:
      for path in export(state, settings, workdir, teacher=export_teacher):
        print(f"wrote {path}")
  return state
