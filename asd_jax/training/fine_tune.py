"""Fine-tuning one model in a workdir: the library behind `python -m asd_jax.train`.

`train(config, workdir)` fine-tunes the network of `config` (BEATs or EAT with an ArcFace head, full or LoRA,
or the dual-branch BEATs + EAT model with the featex + SCAdaCos loss) on the training clips of
`config.data.root`. The workdir receives `checkpoints/` (Orbax: the train state with the loss' non-trainable
`extra` state, e.g. the dual branch's SCAdaCos centres and scales, data position, config, label space),
`config.json`, `label_space.json` and `metrics.jsonl`. A run finds its latest checkpoint there and continues
from it, after checking that the checkpoint was written with the same `train_state.RUN_FIELDS` (a difference is
an error listing each field, saved vs now). `dry_run` builds the network abstractly and prints the parameter
summary (total and trainable counts per subtree) without training.
"""

from __future__ import annotations

import json
import os

import jax

from asd_jax import atomic
from asd_jax import config_checks
from asd_jax import workdir_lock
from asd_jax.models import networks
from asd_jax.runtime import sharding as shd
from asd_jax.checkpoints import train_state
from asd_jax.training import data as train_data
from asd_jax.training import experiment
from asd_jax.training import loop
from asd_jax.training import train_log


def train(config, workdir: str, *, dry_run: bool = False, resume: bool = True, progress: bool = True,
          stop_after: int | None = None):
  """Runs (or with `dry_run` only describes) the fine-tuning of `config` in `workdir`; returns the state.

  Config values that make no sense (`asd_jax.config_checks`) are refused before anything is read, and the
  workdir is locked (`asd_jax.workdir_lock`): a second run on it is refused, naming the process that holds it.
  `stop_after` (tests and benchmarks only) stops after this many steps of this call, with a checkpoint, as
  if the job had been killed there; calling `train` again resumes it.
  """
  config_checks.check(config)
  workdir = os.path.abspath(workdir)
  shd.initialize_distributed(config.train.distributed)
  if dry_run:
    return _dry_run(config)
  # Locked first: a second run is refused before it reads anything, and before Orbax opens the folder (its
  # manager cleans up and garbage-collects steps).
  with workdir_lock.hold(workdir, "train", enabled=jax.process_index() == 0):
    return _train(config, workdir, resume=resume, progress=progress, stop_after=stop_after)


def _dry_run(config) -> None:
  label_space = train_data.label_space(config, required=False)
  num_classes = label_space.num_classes if label_space is not None else 1
  network = networks.build_network(config, num_classes)
  run = experiment.create_run(config, network, jax.random.key(config.seed), total_steps=1, abstract=True)
  note = "" if label_space is not None else " (no dataset found: heads sized for 1 class)"
  print(f"{network.name} ({'LoRA' if config.lora.enabled else 'full'} fine-tuning), {num_classes} classes{note}")
  print(experiment.format_summary(run.state.params, run.labels, run.state.extra))


def _train(config, workdir: str, *, resume: bool, progress: bool, stop_after: int | None):
  # The dataset scan (names, every wav header, clip lengths, training clips per machine) before any compute.
  clips = train_data.records(config, training=True)
  label_space = train_data.label_space(config, clips=clips)
  network = networks.build_network(config, label_space.num_classes)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))

  batches, num_clips = train_data.train_batches(config, label_space, clips)
  mesh = shd.data_mesh()
  shd.check_batch_size(config.train.batch_size, mesh)
  steps_per_epoch = num_clips // config.train.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"{num_clips} training clips under {config.data.root} is less than one batch of "
                     f"{config.train.batch_size}")
  num_steps = steps_per_epoch * config.train.epochs

  meta = {"config": json.loads(config.to_json_best_effort()), "label_space": json.loads(label_space.to_json()),
          "data_root": os.path.abspath(config.data.root), "network": network.name,
          "encoder_config": network.architecture, "num_steps": num_steps, "steps_per_epoch": steps_per_epoch}
  ckpt = train_state.Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints)
  writer = None
  try:
    if ckpt.latest_step() is not None:  # Checked before any compute: a refused resume costs nothing.
      if not resume:
        raise FileExistsError(f"{ckpt.directory} already holds checkpoints (latest step {ckpt.latest_step()}); "
                              "use a new --workdir or drop --noresume to continue it")
      train_state.check_same_run(ckpt.directory, ckpt.restore_meta(), meta, train_state.RUN_FIELDS, hint=(
          f"Resume with the saved settings ({os.path.join(workdir, 'config.json')}) or use a new --workdir."))
    run = experiment.create_run(config, network, init_rng, num_steps)
    print(experiment.format_summary(run.state.params, run.labels, run.state.extra))
    if jax.process_index() == 0:
      os.makedirs(workdir, exist_ok=True)
      atomic.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
      label_space.save(os.path.join(workdir, "label_space.json"))
    writer = train_log.MetricWriter(workdir)
    state = loop.fit(run.state, run.train_step(), batches, num_steps=num_steps, mesh=mesh, rng=step_rng,
                     checkpointer=ckpt, checkpoint_every=config.train.checkpoint_every, meta=meta, writer=writer,
                     log_every=config.train.log_every, steps_per_epoch=steps_per_epoch, progress=progress,
                     stop_after=stop_after, shown_metrics=network.progress_metrics, donate=config.train.donate,
                     prefetch=config.data.prefetch)
  finally:
    if writer is not None:
      writer.close()
    ckpt.close()
  return state
