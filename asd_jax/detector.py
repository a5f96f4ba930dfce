"""A trained system as a self-contained folder (the detector), and scoring new recordings with it.

`export` writes everything a fused system needs to score a clip, and nothing of the training data:

  <dir>/detector.json                 format, system name, fusion weights per model, per-section decision
                                      thresholds, threshold settings, the models and their order
  <dir>/models/<key>/encoders/<name>/ each encoder of a network model (BEATs or EAT, both for Dual-Branch) as a
                                      converted checkpoint (Orbax + JSON architecture), exactly the parameters the
                                      pipeline embedded with (fine-tuned: LoRA merged, as the pipeline's embedding
                                      step merged it), readable by the encoder's own `load()`; encoders.json says
                                      where each one goes
  <dir>/models/<key>/head.npz         the remaining parameters (heads), '/'-joined paths
  <dir>/models/<key>/config.json      the model's config (clip length, sample rate, front end, pooling, the batch
                                      size the pipeline embedded with)
  <dir>/models/<key>/scorer.npz       normal memory banks (with SMOTE entries), normalisation statistics,
                                      per-model thresholds, training clip names relative to the dataset root

Only the models the system uses are written (non-zero weight, or a source of a concatenation model with
non-zero weight). The folder is built beside its target and swapped in whole (`asd_jax.atomic`): a kill leaves
the old detector or the new one.

`Detector(dir)` computes what the pipeline computed: it rebuilds each network from its config
(`models.networks`) with the exported parameters, embeds the wav files through the same function as the
pipeline (`embedding.extract.Embedder`: same decoding, padding, batch shape and compiled forward), and scores
them through the same fused path (`scoring.fused`: per-model normalised scores, fusion, the section's threshold,
the nearest normal training clip). Neither loading nor scoring imports the training package.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.traverse_util as tu
import jax
import ml_collections
import numpy as np

from asd_jax import atomic
from asd_jax.data import records as records_lib
from asd_jax.embedding import extract
from asd_jax.models import checkpoint_io
from asd_jax.models import networks
from asd_jax.scoring import features
from asd_jax.scoring import fused as fused_lib
from asd_jax.scoring import scorer as scorer_lib

FORMAT = "asd_jax.detector"
VERSION = 2
MANIFEST = "detector.json"


class DetectorError(ValueError):
  """A detector folder that is missing, incomplete or of another format."""


@dataclasses.dataclass(frozen=True)
class ExportedModel:
  """One model of a system as the pipeline ran it: what `export` writes for it.

  Attributes:
    key, name: the model's key and table name.
    layers: "last" or "all" (what its scorer sees, `features.model_vectors`).
    sources: keys of the models a concatenation model joins (then `config` is None).
    all_layers: whether its embeddings were made with every layer's output (the forward pass to replay).
    config: the model's config as it embedded (None for a concatenation model).
    network: its network; params: the plain parameters it embedded with.
    num_classes: the size of its head (the training label space; 1 for a model that was not trained).
    scorer: its fitted scorer.
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


def _section_id(machine: str, section: str) -> str:
  return f"{machine}/{section}"


def needed_models(weights: Mapping[str, float], sources: Mapping[str, Sequence[str]]) -> set[str]:
  """Keys a system needs: its weighted models and the sources of weighted concatenation models."""
  used = set(fused_lib.weighted(weights))
  for k in list(used):
    used.update(sources.get(k, ()))
  return used


def _relative_scorer(scorer: scorer_lib.Scorer, root: str) -> scorer_lib.Scorer:
  paths = [os.path.relpath(p, root) if os.path.isabs(p) else p for p in scorer.train_paths]
  return dataclasses.replace(scorer, train_paths=paths)


def _encoder_slots(config: ml_collections.ConfigDict) -> list[tuple[tuple[str, ...], str, str]]:
  """`(path in the model params, encoder registry name, config.model field of its checkpoint)` per encoder."""
  if config.model.encoder == networks.DUAL_BRANCH:
    return [(("encoder", name), name, f"{name}_checkpoint") for name in networks.DUAL_BRANCH_ENCODERS]
  if config.model.encoder == networks.LOG_MEL_STATS:
    return []
  return [(("encoder",), config.model.encoder, "init_checkpoint")]


def _write_network(model: ExportedModel, out_dir: str) -> None:
  """Each encoder as a converted checkpoint, the rest (heads) as .npz, and the config."""
  flat = tu.flatten_dict(jax.device_get(model.params)) if model.params else {}
  slots = []
  for path, name, field in _encoder_slots(model.config):
    arch = model.network.architecture if len(path) == 1 else model.network.architecture[path[-1]]
    subtree = tu.unflatten_dict({k[len(path):]: v for k, v in flat.items() if k[:len(path)] == path})
    checkpoint_io.save_converted(os.path.join(out_dir, "encoders", name), subtree, name, arch)
    flat = {k: v for k, v in flat.items() if k[:len(path)] != path}
    slots.append({"path": list(path), "encoder": name, "field": field, "dir": f"encoders/{name}"})
  np.savez(os.path.join(out_dir, "head.npz"), **{"/".join(k): np.asarray(v) for k, v in flat.items()})
  with open(os.path.join(out_dir, "encoders.json"), "w") as f:
    json.dump(slots, f, indent=1)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    f.write(model.config.to_json_best_effort(indent=2))


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
  if os.path.isdir(directory) and not os.path.isfile(os.path.join(directory, MANIFEST)):
    raise FileExistsError(f"{directory} exists and is not a detector folder; not replacing it")
  by_key = {m.key: m for m in models}
  needed = needed_models(weights, {m.key: m.sources for m in models})
  missing = sorted(needed - set(by_key))
  if missing:
    raise ValueError(f"system {system} needs models {missing}, which were not given")
  staging = atomic.staging_dir(directory)
  entries = []
  for model in models:
    if model.key not in needed:
      continue
    out_dir = os.path.join(staging, "models", model.key)
    os.makedirs(out_dir)
    if model.config is not None:
      _write_network(model, out_dir)
    _relative_scorer(model.scorer, root).save(os.path.join(out_dir, "scorer.npz"))
    entries.append({"key": model.key, "name": model.name, "layers": model.layers, "sources": list(model.sources),
                    "all_layers": model.all_layers, "num_classes": model.num_classes,
                    "weight": float(weights.get(model.key, 0.0))})
  manifest = {
      "format": FORMAT, "version": VERSION, "system": system, "note": note,
      "models": entries,
      "weights": {k: float(w) for k, w in weights.items() if k in needed},
      "thresholds": {_section_id(*k): float(v) for k, v in sorted(thresholds.items())},
      "threshold_method": threshold_method, "threshold_quantile": threshold_quantile,
  }
  with open(os.path.join(staging, MANIFEST), "w") as f:  # last: a folder without it is not a detector
    json.dump(manifest, f, indent=1)
  atomic.publish_dir(staging, directory)
  return directory


# ------------------------------------------------------------------------------------------- loading


def _load_network(model_dir: str, num_classes: int) -> tuple[ml_collections.ConfigDict, networks.Network, Any]:
  """`(config, network, params)` of an exported model, from its folder alone."""
  with open(os.path.join(model_dir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(os.path.join(model_dir, "encoders.json")) as f:
    slots = json.load(f)
  for slot in slots:
    config.model[slot["field"]] = os.path.join(model_dir, slot["dir"])
  network = networks.build_network(config, num_classes)
  expected = tu.flatten_dict(jax.eval_shape(network.init, jax.random.key(0))[0])
  flat = {}
  for path, _, subtree in network.pretrained:
    flat.update({tuple(path) + k: v for k, v in tu.flatten_dict(subtree).items()})
  with np.load(os.path.join(model_dir, "head.npz"), allow_pickle=False) as data:
    flat.update({tuple(k.split("/")): data[k] for k in data.files})
  checkpoint_io.check_state_dict({"/".join(k): v for k, v in flat.items()},
                                 {"/".join(k): v.shape for k, v in expected.items()}, source=model_dir)
  params = tu.unflatten_dict({k: np.asarray(v) for k, v in flat.items()}) if flat else {}
  return config, network, params


@dataclasses.dataclass(frozen=True)
class Detection:
  """Result for one clip: fused score, decision (1 anomalous), threshold, nearest normal training clip
  (relative to the training dataset root) and each weighted model's normalised score."""

  path: str
  machine: str
  section: str
  score: float
  decision: int
  threshold: float
  nearest_train_clip: str
  model_scores: dict[str, float]


class Detector:
  """A loaded detector folder (see the module docstring)."""

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    atomic.recover_dir(self.directory)
    path = os.path.join(self.directory, MANIFEST)
    if not os.path.isfile(path):
      raise DetectorError(f"{self.directory}: not a detector folder (no {MANIFEST}); the pipeline writes one "
                          "to WORKDIR/detector")
    with open(path) as f:
      manifest = json.load(f)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
      raise DetectorError(f"{path}: expected format {FORMAT!r} version {VERSION}, found "
                          f"{manifest.get('format')!r} version {manifest.get('version')!r}; export it again "
                          "with this version (re-run the pipeline)")
    self.manifest = manifest
    self.system = manifest["system"]
    self.models = manifest["models"]
    self.weights = dict(manifest["weights"])
    self.thresholds = {tuple(k.split("/", 1)): v for k, v in manifest["thresholds"].items()}
    self.scorers = {}
    for m in self.models:
      scorer_path = os.path.join(self.directory, "models", m["key"], "scorer.npz")
      if not os.path.isfile(scorer_path):
        raise DetectorError(f"{self.directory}: model {m['key']} has no scorer.npz")
      self.scorers[m["key"]] = scorer_lib.Scorer.load(scorer_path)
    self._networks: dict[str, tuple[ml_collections.ConfigDict, networks.Network, Any]] = {}
    self._embedders: dict[str, extract.Embedder] = {}

  @property
  def sections(self) -> list[tuple[str, str]]:
    """The (machine, section) pairs the detector can score."""
    return sorted(self.thresholds)

  @property
  def machines(self) -> list[str]:
    return sorted({m for m, _ in self.thresholds})

  def network(self, key: str) -> tuple[ml_collections.ConfigDict, networks.Network, Any]:
    """`(config, network, params)` of model `key` (loaded once)."""
    if key not in self._networks:
      entry = next(m for m in self.models if m["key"] == key)
      self._networks[key] = _load_network(os.path.join(self.directory, "models", key), entry["num_classes"])
    return self._networks[key]

  def check_section(self, machine: str, section: str) -> None:
    """Raises ValueError naming the known sections when (machine, section) was not trained."""
    if (machine, section) not in self.thresholds:
      known = ", ".join(f"{m} section {s}" for m, s in self.sections)
      raise ValueError(f"the detector knows no machine type {machine!r} section {section!r}; it was trained "
                       f"on: {known}")

  def embeddings(self, records: Sequence[records_lib.ClipRecord]) -> dict[str, dict[str, np.ndarray]]:
    """{network model key: its outputs for `records`}, as the pipeline's embedding step computes them."""
    out = {}
    for m in self.models:
      if m["sources"]:
        continue
      if m["key"] not in self._embedders:  # the forward pass compiles once per model
        config, network, params = self.network(m["key"])
        self._embedders[m["key"]] = extract.Embedder(config, network, params, all_layers=m["all_layers"])
      out[m["key"]] = self._embedders[m["key"]](records)
    return out

  def score(self, paths: Sequence[str], machines: Sequence[str], sections: Sequence[str]) -> list[Detection]:
    """Scores wav files of known (machine, section)s; returns one `Detection` per path, in order."""
    for machine, section in zip(machines, sections):
      self.check_section(machine, section)
    records = [records_lib.ClipRecord(path=p, machine=m, section=s, split=records_lib.SPLIT_TEST)
               for p, m, s in zip(paths, machines, sections)]
    embeddings = self.embeddings(records)
    vectors = {m["key"]: features.model_vectors(m["key"], embeddings, layers=m["layers"], sources=m["sources"])
               for m in self.models}
    model_scores = fused_lib.score_models(self.scorers, vectors, records)
    result = fused_lib.score_system(self.weights, self.scorers, model_scores, records, self.thresholds)
    train_paths = self.scorers[fused_lib.weighted(self.weights)[0]].train_paths
    return [Detection(path=r.path, machine=r.machine, section=r.section, score=float(result.scores[i]),
                      decision=int(result.decisions[i]), threshold=float(self.thresholds[(r.machine, r.section)]),
                      nearest_train_clip=train_paths[int(result.nearest_train_clip[i])],
                      model_scores={k: float(v[i]) for k, v in result.model_scores.items()})
            for i, r in enumerate(records)]
