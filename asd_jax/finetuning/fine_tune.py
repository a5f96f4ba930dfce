"""Fine-tuning one model in a workdir: the library behind `python -m asd_jax.train`.

`train(config, workdir)` fine-tunes the network of `config` (BEATs or EAT with an ArcFace head, full or LoRA,
or the dual-branch BEATs + EAT model with the featex + SCAdaCos loss) on the training clips of
`config.data.root`, through the generic trainer (`asd_jax.training`: the one train step, the loop,
checkpoints, the optimiser over the trainable/frozen partition, the train log). What is fine-tuning's own:

* the data: a classifier trains on the `train/` clips and the DCASE 2025 supplementary recordings
  (`supplemental/`; `records.is_fine_tuning_clip`), each machine type's clean-machine and noise-only clips
  classes of their own (`<machine>/clean`, `<machine>/noise`, see `asd_jax.data.labels`);
* `setup`: the trainable tree (`{"model": params}` for full fine-tuning, `{"model": params, "lora": factors}` with
  LoRA factors over the targeted kernels of every encoder), its TRAINABLE/FROZEN labels (the head, plus
  `config.lora.extra_trainable`), the optimiser and the network's loss with LoRA merged in, one code path for
  every network (`asd_jax.models.networks`);
* `RUN_FIELDS` / `MODEL_FIELDS`: which settings make two fine-tuning runs (or a trained model and a config) the
  same.

The workdir receives `checkpoints/` (the train state with the loss' non-trainable `extra`, e.g. the dual
branch's SCAdaCos centres and scales, data position, config, label space), `config.json`, `label_space.json`
and `metrics.jsonl`. A run finds its latest checkpoint there and continues from it, after checking that it
was written with the same `RUN_FIELDS` (a difference is an error listing each field, saved vs now;
`accept_changes` lets the optimiser settings and the epochs change). `dry_run` builds the network abstractly
and prints the parameter summary (total and trainable counts per subtree) without training.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.traverse_util as tu
import jax
import ml_collections

from asd_jax import config_checks
from asd_jax import workdir_lock
from asd_jax.data import datasets
from asd_jax.data import digest
from asd_jax.data import labels as labels_lib
from asd_jax.data import layout
from asd_jax.data import records as rec
from asd_jax.finetuning import holdout
from asd_jax.finetuning import lora
from asd_jax.models import networks
from asd_jax.runtime import sharding as shd
from asd_jax.training import loop
from asd_jax.training import optimizer
from asd_jax.training import train_step as ts

Params = Any
HEAD = r"^head/"  # the classifier's ArcFace head: trained with LoRA too (the report's "LoRA + head")
LABEL_SPACE = "label_space.json"  # beside the run's config.json: the classes the head was trained on

# Shape the trained parameters: a checkpoint read with other values would be misread. (LoRA's alpha only
# scales the merge, and the saved value is used; the optimiser only shapes state restored alongside.)
MODEL_FIELDS = ("config.model", "config.lora.enabled", "config.lora.rank", "config.lora.targets", "config.loss")
# Make one fine-tuning run: continuing (or reusing, the pipeline) a run with other values would mix two runs'
# settings. Fields left out (data workers, logging, checkpoint cadence, the embedding settings) never refuse a
# reuse; everything under config.model is compared, its fast-path switches included.
RUN_FIELDS = MODEL_FIELDS + ("config.seed", "config.data.sample_rate", "config.data.clip_seconds",
                             "config.data.channels", "config.data.supplemental", "config.lora", "config.optim",
                             "config.train.batch_size", "config.train.epochs", "config.train.holdout_fraction",
                             "config.augment", "data_root", "label_space", "num_steps")


# --- The data ---------------------------------------------------------------------------------------------------


def _root(config: ml_collections.ConfigDict) -> str:
  return os.path.abspath(config.data.root) if config.data.root else ""


def records(config: ml_collections.ConfigDict, *, training: bool = False) -> list[rec.ClipRecord]:
  """Every clip under `config.data.root`, sorted by path, after the scan's checks: every wav header readable,
  no clip too short for `config.data.clip_seconds`, every channel count readable with the channel policy
  (`datasets.wav_config(config.data).channels`) and (`training`) training clips in every machine folder and no
  NaN or inf sample in any clip (float files decoded: a damaged clip stops training before it starts)."""
  root = _root(config)
  if not root or not os.path.isdir(root):
    raise FileNotFoundError(f"dataset {root or '(none)'}: not a directory (config.data.root={config.data.root!r}); "
                            "make the synthetic data with `python -m asd_jax.data.synth --out DIR` or point it at a "
                            "DCASE dataset")
  return layout.scan_dataset(root, clip_seconds=config.data.clip_seconds, require_train=training,
                             channels=datasets.wav_config(config.data).channels, finite=training)


def training_records(clips: list[rec.ClipRecord], config: ml_collections.ConfigDict) -> list[rec.ClipRecord]:
  """The clips a classifier trains on (`records.is_fine_tuning_clip`, the supplementary recordings with
  `config.data.supplemental`), in the order given."""
  supplemental = bool(config.data.get("supplemental", True))
  return [r for r in clips if rec.is_fine_tuning_clip(r, supplemental=supplemental)]


def label_space(config: ml_collections.ConfigDict, *, required: bool = True,
                clips: list[rec.ClipRecord] | None = None) -> labels_lib.LabelSpace | None:
  """The label space of the training clips, supplementary classes included (None if the dataset is missing
  and not `required`); `clips` are `records(config, training=True)` when the caller has them already."""
  root = _root(config)
  if not required and (not root or not os.path.isdir(root)):
    return None
  clips = records(config, training=True) if clips is None else clips
  return labels_lib.LabelSpace.from_records(training_records(clips, config))


def train_batches(config: ml_collections.ConfigDict, space: labels_lib.LabelSpace,
                  clips: list[rec.ClipRecord] | None = None):
  """`(endless shuffled iterator of this process's batches, number of training clips)` over the
  `training_records` of `clips` (default: `records(config, training=True)`)."""
  train = training_records(records(config, training=True) if clips is None else clips, config)
  if len(train) < config.train.batch_size:
    folders = "train/ and supplemental/" if config.data.get("supplemental", True) else "train/"
    raise ValueError(f"config.train.batch_size={config.train.batch_size} is more than the {len(train)} training clips "
                     f"({folders}) under {_root(config)}: lower config.train.batch_size to at most "
                     f"{len(train)}")
  dataset = datasets.training_dataset(train, space, batch_size=shd.local_batch(config.train.batch_size),
                                      seed=config.seed, config=datasets.wav_config(config.data),
                                      worker_count=config.data.num_workers)
  return iter(dataset), len(train)


# --- The trainable tree, its labels, the optimiser and the loss -------------------------------------------------


def _check_lora_scopes(factors: Params, scopes: tuple[tuple[str, ...], ...], targets: str) -> None:
  covered = {keys[:len(scope)] for keys in tu.flatten_dict(factors) for scope in scopes}
  for scope in scopes:
    if scope not in covered:
      raise ValueError(f"LoRA targets {targets!r} match no kernel under {'/'.join(scope)}: that encoder would "
                       "stay frozen; widen config.lora.targets")


def init_trainable(config: ml_collections.ConfigDict, network: networks.Network, rng: jax.Array, *,
                   abstract: bool = False) -> tuple[Params, Params]:
  """`(trainable tree {"model", ["lora"]}, extra)`, pretrained subtrees in place; `abstract` gives
  ShapeDtypeStructs (no compute, no checkpoint values)."""
  model_rng, lora_rng = jax.random.split(rng)

  def init():
    params, extra = network.init(model_rng)
    tree = {"model": params}
    if config.lora.enabled:
      tree["lora"] = lora.init_lora(params, lora_rng, rank=config.lora.rank, targets=config.lora.targets)
      _check_lora_scopes(tree["lora"], network.lora_scopes, config.lora.targets)
    return tree, extra

  if abstract:
    return jax.eval_shape(init)
  tree, extra = jax.jit(init)()
  tree["model"] = networks.with_pretrained(network, tree["model"])
  return tree, extra


def labels_for(config: ml_collections.ConfigDict, tree: Params) -> Params:
  """TRAINABLE / FROZEN per leaf: everything without LoRA; with it the factors, the head and the
  `config.lora.extra_trainable` regex (e.g. `"norm"` for every LayerNorm; see configs/common.py)."""
  extra = config.lora.get("extra_trainable", "")
  pattern = f"({HEAD})|({extra})" if extra else HEAD
  return lora.trainable_labels(tree, train_encoder=not config.lora.enabled, trainable_modules=pattern,
                               never_trained=config.model.never_trained)


def setup(config: ml_collections.ConfigDict, network: networks.Network, rng: jax.Array, total_steps: int, *,
          abstract: bool = False) -> ts.TrainSetup:
  """The initial `TrainState` (params, optimiser state, extra), labels, optimiser and loss of `network`."""
  if network.loss is None:
    raise ValueError(f"config.model.network={network.name!r} has nothing to train (it is a non-learned reference)")
  tree, extra = init_trainable(config, network, rng, abstract=abstract)
  labels = labels_for(config, tree)
  tx, schedule = optimizer.make_optimizer(config.optim, total_steps, labels)
  if abstract:
    state = jax.eval_shape(lambda t, e: ts.create_state(t, tx, e), tree, extra)
  else:
    state = ts.create_state(tree, tx, extra)
  return ts.TrainSetup(state=state, labels=labels, tx=tx, loss=lora.with_lora(network.loss, alpha=config.lora.alpha),
                       schedule=schedule)


# --- The run ----------------------------------------------------------------------------------------------------


def train(config: ml_collections.ConfigDict, workdir: str, *, dry_run: bool = False, resume: bool = True,
          accept_changes: bool = False, progress: bool = True, stop_after: int | None = None,
          hash_cache: str | None = None) -> ts.TrainState | None:
  """Runs (or with `dry_run` only describes) the fine-tuning of `config` in `workdir`; returns the state.

  Config values that make no sense (`asd_jax.config_checks`) are refused before anything is read, and the
  workdir is locked (`asd_jax.workdir_lock`): a second run on it is refused, naming the process that holds it.
  `accept_changes` continues a run whose latest checkpoint was written with other optimiser settings or epochs
  (`train_state.ADJUSTABLE_FIELDS`). The content digests of the training clips (`asd_jax.data.digest`, cached in
  `hash_cache`, default `<workdir>/clip_hashes.json`) go into the checkpoints, and a resume onto changed clips is
  refused, naming them (`loop.check_same_clips`). `stop_after` (tests and benchmarks only) stops after this many
  steps of this call, with a checkpoint, as if the job had been killed there; calling `train` again resumes it.
  """
  config_checks.check(config)
  workdir = os.path.abspath(workdir)
  shd.initialize_distributed(config.train.distributed)
  if dry_run:
    return _dry_run(config)
  # Locked first: a second run is refused before it reads anything, and before Orbax opens the folder (its
  # manager cleans up and garbage-collects steps).
  with workdir_lock.hold(workdir, "train", enabled=jax.process_index() == 0):
    return _train(config, workdir, resume=resume, accept_changes=accept_changes, progress=progress,
                  stop_after=stop_after, hash_cache=hash_cache or os.path.join(workdir, digest.CACHE_FILE))


def _dry_run(config: ml_collections.ConfigDict) -> None:
  space = label_space(config, required=False)
  num_classes = space.num_classes if space is not None else 1
  network = networks.build_network(config, num_classes)
  built = setup(config, network, jax.random.key(config.seed), total_steps=1, abstract=True)
  note = "" if space is not None else " (no dataset found: heads sized for 1 class)"
  print(f"{network.name} ({'LoRA' if config.lora.enabled else 'full'} fine-tuning), {num_classes} classes{note}")
  print(optimizer.format_summary(built.state.params, built.labels, built.state.extra))


def _train(config: ml_collections.ConfigDict, workdir: str, *, resume: bool, accept_changes: bool, progress: bool,
           stop_after: int | None, hash_cache: str) -> ts.TrainState:
  # The dataset scan (names, every wav header, clip lengths, float samples, training clips per machine) and the
  # training clips' content digests, before any compute.
  clips = records(config, training=True)
  train_clips = training_records(clips, config)
  trained_on = digest.hashed_table(digest.relative_paths(train_clips, _root(config)), hash_cache,
                                   save=jax.process_index() == 0)
  space = label_space(config, clips=clips)
  network = networks.build_network(config, space.num_classes)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))

  fit_clips, heldout_clips = holdout.split(train_clips, space, config.train.holdout_fraction)
  batches, num_clips = train_batches(config, space, fit_clips)
  mesh = shd.data_mesh()
  shd.check_batch_size(config.train.batch_size, mesh)
  steps_per_epoch = num_clips // config.train.batch_size  # >= 1: train_batches refuses a larger batch
  num_steps = steps_per_epoch * config.train.epochs

  meta = {"config": json.loads(config.to_json_best_effort()), "label_space": json.loads(space.to_json()),
          "data_root": os.path.abspath(config.data.root), "network": network.name,
          "encoder_config": network.architecture, "num_steps": num_steps, "steps_per_epoch": steps_per_epoch,
          loop.CLIPS_KEY: loop.clips_entry(trained_on, _root(config))}
  # Checked before any compute: a refused resume costs nothing.
  with loop.checkpointer(workdir, meta, RUN_FIELDS, keep=config.train.keep_checkpoints, resume=resume,
                         accept_changes=accept_changes) as ckpt:
    built = setup(config, network, init_rng, num_steps)
    print(optimizer.format_summary(built.state.params, built.labels, built.state.extra))
    loop.write_config(workdir, config)
    if jax.process_index() == 0:
      space.save(os.path.join(workdir, LABEL_SPACE))
    return loop.train(built, batches, workdir=workdir, checkpointer=ckpt, num_steps=num_steps, mesh=mesh,
                      rng=step_rng, checkpoint_every=config.train.checkpoint_every, meta=meta,
                      log_every=config.train.log_every, steps_per_epoch=steps_per_epoch, progress=progress,
                      stop_after=stop_after, shown_metrics=network.progress_metrics, donate=config.train.donate,
                      prefetch=config.data.prefetch,
                      evaluate=evaluation(config, network, space, fit_clips, heldout_clips, num_steps),
                      evaluate_every=config.train.eval_every)


def evaluation(config: ml_collections.ConfigDict, network: networks.Network, space: labels_lib.LabelSpace,
               fit_clips: list[rec.ClipRecord], heldout_clips: list[rec.ClipRecord], num_steps: int):
  """The loop's `evaluate`: eval-mode accuracy on the training clips (`train_accuracy`, at most
  `config.train.eval_clips` of them) and on the held-out ones (`heldout_accuracy`, when
  `config.train.holdout_fraction` holds any out); after the last step also `num_classes`, `chance_accuracy`
  (the largest class's share of the training clips) and `heldout_clips`, what `finetuning.health` reads."""
  evaluator = holdout.Evaluator(config, network, {
      "train": holdout.subset(fit_clips, config.train.eval_clips), "heldout": heldout_clips}, space)
  final = {"num_classes": space.num_classes, "heldout_clips": len(heldout_clips),
           "chance_accuracy": holdout.chance_accuracy(space.labels(fit_clips))}

  def evaluate(state):
    values = evaluator(lora.merge_lora(state.params, alpha=config.lora.alpha), state.extra)
    return {**values, **final} if int(state.step) >= num_steps else values

  return evaluate
