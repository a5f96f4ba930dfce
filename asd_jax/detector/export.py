"""A trained system exported as a detector folder (its layout: `asd_jax.detector.detector`).

`export` writes everything a fused system needs to score a clip, and nothing of the training data: the encoders
as converted checkpoints (`checkpoints.converted`), each distinct set of weights once (named by a digest of its
content, so a base encoder that several models share is written once), per model its heads, a LoRA model's
factors, its config and fitted scorer, and the manifest (weights, per-section thresholds, and how recordings are
read: the models' channel policy, rate and clip length, which must be one for all of them, and the file formats of
the training clips, read from their headers). Only the models the system uses are written (non-zero weight, or a
source of a concatenation model with non-zero weight). The folder is built beside its target and swapped in
whole (`asd_jax.atomic`): a kill leaves the old detector or the new one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.traverse_util as tu
import jax
import ml_collections
import numpy as np

from asd_jax import atomic
from asd_jax.checkpoints import converted
from asd_jax.detector import detector as layout
from asd_jax.models import networks
from asd_jax.scoring import fusion
from asd_jax.scoring import scorer as scorer_lib


@dataclasses.dataclass(frozen=True)
class ExportedModel:
  """One model of a system as the pipeline ran it: what `export` writes for it.

  Attributes:
    key, name: the model's key and table name.
    layers: "last" or "all" (what its scorer sees, `features.model_vectors`).
    sources: keys of the models a concatenation model joins (then `config` is None).
    all_layers: whether its embeddings were made with every layer's output (the forward pass to replay).
    config: the model's config as it embedded (None for a concatenation model).
    network: its network; params: the plain parameters it embedded with, or, for a LoRA model, those before its
      factors `lora` are merged in (its base encoder as it started, and the trained head).
    num_classes: the size of its head (the training label space; 1 for a model that was not trained).
    scorer: its fitted scorer.
    lora, lora_alpha: a LoRA model's trained factors (`{"<module path>": {"a", "b"}}` as trained) and the alpha
      it was trained with; the detector merges them on loading as the pipeline did (`lora_factors.merge_lora`).
      None for every other model.
  """

  key: str
  name: str
  layers: str
  sources: tuple[str, ...]
  all_layers: bool
  config: ml_collections.ConfigDict | None
  network: networks.Network | None
  params: Any
  num_classes: int
  scorer: scorer_lib.Scorer
  lora: Any = None
  lora_alpha: float | None = None


def needed_models(weights: Mapping[str, float], sources: Mapping[str, Sequence[str]]) -> set[str]:
  """Keys a system needs: its weighted models and the sources of weighted concatenation models."""
  used = set(fusion.weighted(weights))
  for k in list(used):
    used.update(sources.get(k, ()))
  return used


def _relative_scorer(scorer: scorer_lib.Scorer, root: str) -> scorer_lib.Scorer:
  paths = [os.path.relpath(p, root) if os.path.isabs(p) else p for p in scorer.train_paths]
  return dataclasses.replace(scorer, train_paths=paths)


def _write_network(model: ExportedModel, out_dir: str, staging: str, written: set[str]) -> None:
  """Each encoder as a converted checkpoint under `staging/encoders/<name>-<digest>/` unless one of the same
  content is `written` already, the rest (heads) as .npz, a LoRA model's factors as .npz, and the config."""
  flat = tu.flatten_dict(jax.device_get(model.params)) if model.params else {}
  slots = []
  for path, name, field in networks.encoder_slots(model.config):
    arch = model.network.architecture if len(path) == 1 else model.network.architecture[path[-1]]
    subtree = tu.unflatten_dict({k[len(path):]: v for k, v in flat.items() if k[:len(path)] == path})
    folder = f"{name}-{converted.params_digest(subtree)[:16]}"
    if folder not in written:
      converted.save_converted(os.path.join(staging, layout.ENCODERS_DIR, folder), subtree, name, arch)
      written.add(folder)
    flat = {k: v for k, v in flat.items() if k[:len(path)] != path}
    slots.append({"path": list(path), "encoder": name, "field": field, "dir": f"{layout.ENCODERS_DIR}/{folder}"})
  atomic.save_npz(os.path.join(out_dir, layout.HEAD), **{"/".join(k): np.asarray(v) for k, v in flat.items()})
  if model.lora:
    factors = tu.flatten_dict(jax.device_get(model.lora))
    atomic.save_npz(os.path.join(out_dir, layout.LORA), **{"/".join(k): np.asarray(v) for k, v in factors.items()})
  atomic.write_json(os.path.join(out_dir, layout.ENCODERS), slots)  # (atomic: a full disk names the file)
  atomic.write_text(os.path.join(out_dir, layout.CONFIG), model.config.to_json_best_effort(indent=2))


def export(directory: str, *, system: str, weights: Mapping[str, float], models: Sequence[ExportedModel],
           thresholds: Mapping[tuple[str, str], float], root: str, threshold_method: str,
           threshold_quantile: float, note: str = "") -> str:
  """Writes the detector folder of a system (replacing an older one, atomically); returns its absolute path.

  `models` are the system's models (`needed_models`; more are ignored), `weights` its weight per model key,
  `thresholds` its fused per-section thresholds, `root` the dataset root (training clip names are stored
  relative to it).
  """
  directory = os.path.abspath(directory)
  atomic.recover_dir(directory)
  if os.path.isdir(directory) and not os.path.isfile(os.path.join(directory, layout.MANIFEST)):
    raise FileExistsError(f"{directory} exists and is not a detector folder; not replacing it")
  by_key = {m.key: m for m in models}
  needed = needed_models(weights, {m.key: m.sources for m in models})
  missing = sorted(needed - set(by_key))
  if missing:
    raise ValueError(f"system {system} needs models {missing}, which were not given")
  used = [m for m in models if m.key in needed]
  wav_config = layout.models_wav_config({m.key: m.config for m in used if m.config is not None}, f"system {system}")
  training_clips = sorted({p for m in used for p in m.scorer.train_paths})  # the memory banks' clips
  input_record = layout.input_record(wav_config, layout.TrainingFormats.of(training_clips))
  staging = atomic.staging_dir(directory)
  entries, written = [], set()
  for model in models:
    if model.key not in needed:
      continue
    out_dir = layout.model_dir(staging, model.key)
    os.makedirs(out_dir)
    if model.config is not None:
      _write_network(model, out_dir, staging, written)
    _relative_scorer(model.scorer, root).save(os.path.join(out_dir, layout.SCORER))
    entries.append({"key": model.key, "name": model.name, "layers": model.layers, "sources": list(model.sources),
                    "all_layers": model.all_layers, "num_classes": model.num_classes,
                    "weight": float(weights.get(model.key, 0.0)),
                    "lora_alpha": float(model.lora_alpha) if model.lora else None})
  manifest = {
      "format": layout.FORMAT, "version": layout.VERSION, "system": system, "note": note,
      "models": entries,
      "weights": {k: float(w) for k, w in weights.items() if k in needed},
      "thresholds": {layout.section_id(*k): float(v) for k, v in sorted(thresholds.items())},
      "threshold_method": threshold_method, "threshold_quantile": threshold_quantile,
      layout.INPUT: input_record,
  }
  atomic.write_json(os.path.join(staging, layout.MANIFEST), manifest)  # last: a folder without it is not a detector
  atomic.publish_dir(staging, directory)
  return directory


