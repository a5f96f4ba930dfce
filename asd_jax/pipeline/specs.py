"""Models and fused systems of a pipeline config, and the NumPy steps between embeddings and scores.

A pipeline config (see `configs/pipeline_base.py`) names its models in `model_keys`; each entry of
`models` is either a fine-tuned model (`train`: a `train.train` config) or a concatenation model
(`sources`: keys of other models whose final pooled embeddings are L2-normalised and joined, the report's
"Fusion" model, which has no training of its own). Every model also says which embedding its kNN scorer
sees: `layers="last"` (the pooled final layer) or `layers="all"` (multi-layer fusion: every layer's pooled
output, each L2-normalised, concatenated by `scoring.features.concat_layers`).

A system is a linear fusion of the models' normalised anomaly scores with fixed weights, listed against the
report's model names (`configs/systems.py`). When a config runs fewer models than a system names (e.g.
`--config.model_keys=fbeats,lbeats`), the system keeps the weights of the models present, renormalised to
sum 1, and is marked reduced. Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from asd_jax.data import records as records_lib
from asd_jax.scoring import scorer as detector
from asd_jax.scoring import features
from asd_jax.scoring import fusion

LAYER_MODES = ("last", "all")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One model of a pipeline run.

  Attributes:
    key: config key and workdir folder name, e.g. "lbeats".
    name: name in the tables and system weights, e.g. "LBEATs".
    train: the `train.train` config (data root filled in); None for a concatenation model.
    sources: keys of the models a concatenation model joins; empty for a trained model.
    layers: "last" (final pooled embedding) or "all" (multi-layer fusion).
    scorer: `scoring.detector` settings.
  """

  key: str
  name: str
  train: ml_collections.ConfigDict | None
  sources: tuple[str, ...]
  layers: str
  scorer: dict[str, Any]

  @property
  def trained(self) -> bool:
    return self.train is not None


@dataclasses.dataclass(frozen=True)
class SystemSpec:
  """A fixed-weight linear fusion: `weights[key]` for each model key (zero weights kept)."""

  name: str
  weights: dict[str, float]
  reduced: bool = False  # some named models were not run; the others' weights were renormalised
  note: str = ""


def _set_root(config: ml_collections.ConfigDict, root: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  if "data" not in config:
    config.data = ml_collections.ConfigDict()
  config.data.root = root
  return config


def _set_init_checkpoints(config: ml_collections.ConfigDict, init: Mapping[str, str]) -> None:
  """Fills empty encoder checkpoint fields from the pipeline's `init` paths (by encoder name)."""
  model = config.get("model")
  if model is None:
    return
  encoder = model.get("encoder")
  if encoder in init and init[encoder] and "init_checkpoint" in model and not model.init_checkpoint:
    model.init_checkpoint = init[encoder]
  for name, path in init.items():  # Two-encoder models: model.<name>_checkpoint.
    field = f"{name}_checkpoint"
    if path and field in model and not model[field]:
      model[field] = path


def model_specs(config: ml_collections.ConfigDict) -> list[ModelSpec]:
  """The models of `config.model_keys`, in that order, with the data root and checkpoints filled in.

  Raises ValueError for an unknown key, a source that is not run before its concatenation model, or a
  bad `layers` value.
  """
  keys = [k.strip() for k in str(config.model_keys).split(",") if k.strip()]
  if not keys:
    raise ValueError("config.model_keys is empty")
  unknown = [k for k in keys if k not in config.models]
  if unknown:
    raise ValueError(f"config.model_keys names {unknown}, not in config.models ({sorted(config.models.keys())})")
  root = os.path.abspath(config.data.root) if config.data.root else ""
  init = dict(config.get("init", {}) or {})
  base_scorer = config.scorer.to_dict()
  specs: list[ModelSpec] = []
  for key in keys:
    entry = config.models[key]
    layers = entry.get("layers", "last")
    if layers not in LAYER_MODES:
      raise ValueError(f"config.models.{key}.layers={layers!r}; expected one of {LAYER_MODES}")
    scorer = {**base_scorer, **(entry.get("scorer", None) or {})}
    sources = tuple(s.strip() for s in str(entry.get("sources", "") or "").split(",") if s.strip())
    train = entry.get("train", None)
    if (train is None) == (not sources):
      raise ValueError(f"config.models.{key}: give exactly one of `train` (a fine-tuning config) or "
                       f"`sources` (models to concatenate)")
    if sources:
      missing = [s for s in sources if s not in [p.key for p in specs]]
      if missing:
        raise ValueError(f"config.models.{key}.sources names {missing}: they must be listed in "
                         f"config.model_keys before {key!r} (model_keys: {keys})")
      if any(not p.trained for p in specs if p.key in sources):
        raise ValueError(f"config.models.{key}: sources must be trained models")
    else:
      train = _set_root(train, root)
      _set_init_checkpoints(train, init)
    specs.append(ModelSpec(key=key, name=entry.get("name", key), train=train, sources=sources, layers=layers,
                           scorer=scorer))
  return specs


def system_specs(config: ml_collections.ConfigDict, specs: Sequence[ModelSpec]) -> list[SystemSpec]:
  """The fixed-weight systems of `config.systems`, mapped onto the models that are run.

  `config.system_models` lists model names; each `config.systems.<name>` lists one weight per name.
  """
  names = list(config.system_models)
  by_name = {s.name: s.key for s in specs}
  out = []
  for system in sorted(config.systems.keys()):
    weights = list(config.systems[system])
    if len(weights) != len(names):
      raise ValueError(f"config.systems.{system} has {len(weights)} weights for {len(names)} models {names}")
    kept = {by_name[n]: float(w) for n, w in zip(names, weights) if n in by_name}
    dropped = [n for n, w in zip(names, weights) if n not in by_name and w != 0.0]
    total = sum(kept.values())
    if total <= 0.0:
      out.append(SystemSpec(system, kept, reduced=True, note=f"skipped: all its weight is on {dropped}"))
      continue
    note = ""
    if dropped:
      kept = {k: w / total for k, w in kept.items()}
      note = f"reduced: {', '.join(dropped)} not run; other weights renormalised to sum 1"
    out.append(SystemSpec(system, kept, reduced=bool(dropped), note=note))
  return out


def scorer_vectors(spec: ModelSpec, embeddings: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
  """The array a model's scorer sees, for every clip.

  Args:
    spec: the model.
    embeddings: {model key: {"embedding": [clips, dim], optional "layer_embeddings": [clips, layers, dim]}}
      for the model itself (trained) or for its sources (concatenation), clips in one shared order.

  Returns:
    [clips, dim] (last layer), [clips, layers, dim] (multi-layer; the scorer concatenates the layers; a
    two-encoder model gives [clips, sum of layers * dims], every layer L2-normalised), or for a
    concatenation model [clips, sum of source dims] of L2-normalised source embeddings.
  """
  if spec.sources:
    parts = [features.concat_layers(embeddings[s]["embedding"], normalize_layers=True) for s in spec.sources]
    return np.concatenate(parts, axis=1)
  own = embeddings[spec.key]
  if spec.layers == "all":
    # One encoder: "layer_embeddings"; two (Dual-Branch): "layers_beats", "layers_eat", possibly of other widths.
    keys = sorted(k for k in own if k == "layer_embeddings" or k.startswith("layers_"))
    if not keys:
      raise ValueError(f"model {spec.key}: layers='all' needs per-layer embeddings (embed with all_layers=True); "
                       f"found {sorted(own)}")
    if len(keys) == 1:
      return own[keys[0]]
    return np.concatenate([features.concat_layers(own[k], normalize_layers=True) for k in keys], axis=1)
  return own["embedding"]


def is_train_clip(record: records_lib.ClipRecord) -> bool:
  """Clips that make the normal memory banks: normal machine clips of the train split."""
  return (record.split == records_lib.SPLIT_TRAIN and record.kind == records_lib.KIND_MACHINE
          and record.label != records_lib.ANOMALY)


def is_test_clip(record: records_lib.ClipRecord) -> bool:
  return record.split == records_lib.SPLIT_TEST and record.kind == records_lib.KIND_MACHINE


@dataclasses.dataclass(frozen=True)
class FusedScores:
  """A system's scores of the test clips: fused normalised scores [n] and 0/1 decisions [n]."""

  scores: np.ndarray
  decisions: np.ndarray
  thresholds: dict[tuple[str, str], float]


def fuse_system(system: SystemSpec, scorers: Mapping[str, detector.Scorer], test_scores: Mapping[str, np.ndarray],
                test_records: Sequence[records_lib.ClipRecord], *, threshold_method: str = "gamma",
                threshold_quantile: float = 0.9) -> FusedScores:
  """Weighted sum of the models' normalised test scores and decisions against fused-training thresholds.

  Args:
    system: the weights per model key.
    scorers: fitted scorers per model key (all fitted on the same training clips, same order).
    test_scores: normalised test scores [n] per model key.
    test_records: the n test clips.
  """
  keys = list(system.weights)
  weights = [system.weights[k] for k in keys]
  fused = fusion.fuse([test_scores[k] for k in keys], weights)
  thresholds = detector.fused_thresholds([scorers[k] for k in keys], weights, method=threshold_method,
                                         quantile=threshold_quantile)
  decisions = np.zeros(len(test_records), np.int64)
  for (machine, section), idx in detector.group_by_section(test_records).items():
    decisions[idx] = (fused[idx] > thresholds[(machine, section)]).astype(np.int64)
  return FusedScores(scores=fused, decisions=decisions, thresholds=thresholds)
