"""What a pipeline re-run reuses: trained models and embeddings, each with a stamp that says what it was made from.

Each embedded model has a folder `WORKDIR/models/<key>/` with a stamp (`workdir.STAMP`, read and written
through `asd_jax.pipeline.workdir`):

  {"trained_step": int, "train_clips": digest,                       fine-tuned models, after training
   "embedded": {"step": int | null, "clips": digest, "all_layers": bool, "batch_size": int, "config": {...}}}

Digests are content digests (`asd_jax.data.digest`, hashes cached in `WORKDIR/clip_hashes.json`): of the clips
a classifier trains on for `train_clips`, of every clip for `clips`. A finished model whose training clips
changed (added, removed, or another recording under the same name) is refused rather than silently reused; an
embedding is redone when the checkpoint, the clips, the layer setting or (frozen models) the config changed.
A model folder trained with another config (`fine_tune.RUN_FIELDS`) is refused. Stamps are written
atomically, after what they describe.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from asd_jax.checkpoints import train_state
from asd_jax.embedding import embed
from asd_jax.embedding import store
from asd_jax.finetuning import fine_tune
from asd_jax.pipeline import specs as specs_lib
from asd_jax.pipeline import workdir as workdir_lib
from asd_jax.training import loop


def _config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def checked_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config fields that decide whether a model folder can be reused (`fine_tune.RUN_FIELDS`)."""
  tree = {"config": _config_json(config)}
  out = {}
  for field in train_state.config_fields(fine_tune.RUN_FIELDS):
    value: Any = tree
    for key in field.split("."):
      value = value.get(key) if isinstance(value, dict) else None
    out[field] = value
  return out


def check_same_model(config: ml_collections.ConfigDict, model_dir: str) -> None:
  """Raises ValueError naming each differing field when `model_dir` was made with another config."""
  path = os.path.join(model_dir, workdir_lib.MODEL_CONFIG)
  if not os.path.isfile(path):
    return
  with open(path) as f:
    saved = json.load(f)
  train_state.check_same_run(path, {"config": saved}, {"config": _config_json(config)},
                             train_state.config_fields(fine_tune.RUN_FIELDS),
                             hint="Use a new --workdir or delete that model folder.")


def ensure_trained(spec: specs_lib.ModelSpec, model_dir: str, train_digest: str, *, progress: bool = True,
                   hash_cache: str | None = None) -> str:
  """Trains (or resumes) `spec` in `model_dir` unless done; returns "ran" or "cached".

  `train_digest` (content digest of the fine-tuning clips) is recorded; a finished model whose training clips
  differ from the current ones is refused rather than silently reused (an unfinished one is refused by its
  resume, `fine_tune.train`, which reads the clip hashes from `hash_cache`).
  """
  check_same_model(spec.config, model_dir)
  stamp = workdir_lib.read_stamp(model_dir)
  if "trained_step" in stamp and loop.latest_step(model_dir) == stamp["trained_step"]:
    if stamp.get("train_clips") != train_digest:
      raise ValueError(f"{model_dir} was trained on other training clips than those now under "
                       f"{spec.config.data.root} (a clip was added, removed or changed); use a new --workdir "
                       "or delete that folder")
    return "cached"
  fine_tune.train(spec.config, model_dir, progress=progress, hash_cache=hash_cache)
  step = loop.latest_step(model_dir)
  if step is None:
    raise RuntimeError(f"training {spec.key} in {model_dir} finished without a checkpoint")
  workdir_lib.write_stamp(model_dir, trained_step=step, train_clips=train_digest)
  return "ran"


def embedded_stamp(model_dir: str) -> dict[str, Any]:
  """The `embedded` entry of the stamp (what the current embeddings were made from)."""
  return workdir_lib.read_stamp(model_dir).get("embedded", {})


def ensure_embedded(spec: specs_lib.ModelSpec, model_dir: str, clips_digest: str, *, progress: bool = True) -> str:
  """Writes `model_dir/embeddings.npz` unless it is up to date; returns "ran" or "cached"."""
  frozen = spec.kind == specs_lib.FROZEN
  if frozen:
    os.makedirs(model_dir, exist_ok=True)
  stamp = embedded_stamp(model_dir)
  path = os.path.join(model_dir, store.ARRAYS)
  step = None if frozen else loop.latest_step(model_dir)
  config = checked_config(spec.config)
  current = (store.is_pair(path) and stamp.get("step") == step
             and stamp.get("clips") == clips_digest and stamp.get("all_layers") == spec.all_layers
             and (not frozen or stamp.get("config") == config))
  if current:
    return "cached"
  embed.embed(spec.config, model_dir, all_layers=spec.all_layers, out=path, progress=progress, frozen=frozen)
  if frozen:
    workdir_lib.write_model_config(model_dir, spec.config)
  batch_size = workdir_lib.read_json(store.records_path(path))["batch_size"]
  workdir_lib.write_stamp(model_dir, embedded={"step": step, "clips": clips_digest, "all_layers": spec.all_layers,
                                               "batch_size": batch_size, "config": config})
  return "ran"
