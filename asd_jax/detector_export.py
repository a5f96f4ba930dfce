"""A trained system as a self-contained folder, and scoring new recordings with it.

`export` writes everything a fused system needs to score a clip, and nothing of the training data:

  <dir>/detector.json                 format, system name, fusion weights per model, per-section decision
                                      thresholds, threshold settings, the models and their order
  <dir>/models/<key>/encoders/<name>/ each fine-tuned encoder (LoRA merged: BEATs or EAT, both for Dual-Branch)
                                      as a converted checkpoint (Orbax + JSON architecture), read by the
                                      encoder's own `load()`; encoders.json says where each one goes
  <dir>/models/<key>/head.npz         the remaining parameters (heads), '/'-joined paths
  <dir>/models/<key>/config.json      the fine-tuning config (clip length, sample rate, front end, pooling)
  <dir>/models/<key>/label_space.json the classes the head was trained on
  <dir>/models/<key>/scorer.npz       normal memory banks (with SMOTE entries), normalisation statistics,
                                      per-model thresholds, training clip names relative to the dataset root

Only the models the system uses are written (non-zero weight, or a source of a concatenation model with
non-zero weight). `Detector.load(dir)` rebuilds each encoder from the folder, embeds wav files exactly as
the pipeline's embedding step does (same clip length, padding, batch size and forward function), scores them
per model, fuses the normalised scores and compares them with the section's threshold. The nearest normal
training clip of a fused system is the training clip with the smallest fused normalised distance
`sum_m w_m (d_m - mean_m) / std_m` (d_m: model m's cosine distance), which for a single model is its 1-NN.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import flax.traverse_util as tu
import jax
import ml_collections
import numpy as np

from asd_jax import embed as embed_lib
from asd_jax import systems
from asd_jax.audio import wav as wavlib
from asd_jax.data import records as records_lib
from asd_jax.models import checkpoint_io
from asd_jax.scoring import scorer as detector_lib
from asd_jax.scoring import features
from asd_jax.scoring import knn
from asd_jax.models import networks
from asd_jax.training import experiment
from asd_jax.runtime import microbatch as microbatch_lib
from asd_jax.runtime import sharding as shd

FORMAT = "asd_jax.detector"
VERSION = 1
MANIFEST = "detector.json"


class DetectorError(ValueError):
  """A detector folder that is missing, incomplete or of another format."""


def _section_id(machine: str, section: str) -> str:
  return f"{machine}/{section}"


def _needed_models(weights: Mapping[str, float], specs: Sequence[systems.ModelSpec]) -> list[systems.ModelSpec]:
  by_key = {s.key: s for s in specs}
  used = {k for k, w in weights.items() if w}
  for k in list(used):
    used.update(by_key[k].sources)
  return [s for s in specs if s.key in used]


def _relative_scorer(scorer: detector_lib.Scorer, root: str) -> detector_lib.Scorer:
  paths = [os.path.relpath(p, root) if os.path.isabs(p) else p for p in scorer.train_paths]
  return dataclasses.replace(scorer, train_paths=paths)


def _encoder_slots(config: ml_collections.ConfigDict) -> list[tuple[tuple[str, ...], str, str]]:
  """`(path in the model params, encoder registry name, config.model field of its checkpoint)` per encoder."""
  if config.model.encoder == networks.DUAL_BRANCH:
    return [(("encoder", name), name, f"{name}_checkpoint") for name in networks.DUAL_BRANCH_ENCODERS]
  return [(("encoder",), config.model.encoder, "init_checkpoint")]


def _export_model(spec: systems.ModelSpec, model_dir: str, out_dir: str) -> None:
  """Writes one fine-tuned model: each encoder as a converted checkpoint, the rest (heads) as .npz."""
  config = spec.train
  system, params, source = embed_lib.model_params(config, model_dir)
  if "checkpoints" not in source:
    raise ValueError(f"model {spec.key}: no training checkpoint in {model_dir} to export")
  flat = tu.flatten_dict(jax.device_get(params))
  slots = []
  for path, name, field in _encoder_slots(config):
    arch = system.architecture if len(path) == 1 else system.architecture[path[-1]]
    subtree = tu.unflatten_dict({k[len(path):]: v for k, v in flat.items() if k[:len(path)] == path})
    checkpoint_io.save_converted(os.path.join(out_dir, "encoders", name), subtree, name, arch)
    flat = {k: v for k, v in flat.items() if k[:len(path)] != path}
    slots.append({"path": list(path), "encoder": name, "field": field, "dir": f"encoders/{name}"})
  np.savez(os.path.join(out_dir, "head.npz"), **{"/".join(k): np.asarray(v) for k, v in flat.items()})
  with open(os.path.join(out_dir, "encoders.json"), "w") as f:
    json.dump(slots, f, indent=1)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  shutil.copyfile(os.path.join(model_dir, "label_space.json"), os.path.join(out_dir, "label_space.json"))


def export(directory: str, *, system: systems.SystemSpec, specs: Sequence[systems.ModelSpec],
           model_dirs: Mapping[str, str], scorers: Mapping[str, detector_lib.Scorer],
           thresholds: Mapping[tuple[str, str], float], train_records: Sequence[records_lib.ClipRecord], root: str,
           threshold_method: str, threshold_quantile: float) -> str:
  """Writes the detector folder of `system` (replacing an older one); returns its absolute path."""
  directory = os.path.abspath(directory)
  if os.path.isdir(directory):
    if not os.path.isfile(os.path.join(directory, MANIFEST)):
      raise FileExistsError(f"{directory} exists and is not a detector folder; not replacing it")
    shutil.rmtree(directory)
  os.makedirs(os.path.join(directory, "models"))
  needed = _needed_models(system.weights, specs)
  entries = []
  for spec in needed:
    out_dir = os.path.join(directory, "models", spec.key)
    os.makedirs(out_dir)
    if spec.trained:
      _export_model(spec, model_dirs[spec.key], out_dir)
    _relative_scorer(scorers[spec.key], root).save(os.path.join(out_dir, "scorer.npz"))
    entries.append({"key": spec.key, "name": spec.name, "layers": spec.layers, "sources": list(spec.sources),
                    "weight": float(system.weights.get(spec.key, 0.0))})
  manifest = {
      "format": FORMAT, "version": VERSION, "system": system.name, "note": system.note,
      "models": entries,
      "thresholds": {_section_id(*k): float(v) for k, v in sorted(thresholds.items())},
      "threshold_method": threshold_method, "threshold_quantile": threshold_quantile,
      "machines": sorted({r.machine for r in train_records}),
  }
  with open(os.path.join(directory, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1)
  return directory


# ------------------------------------------------------------------------------------------- loading


@dataclasses.dataclass
class _Encoder:
  """A loaded fine-tuned model: embeds waveforms like `embed.embed` does."""

  config: ml_collections.ConfigDict
  forward: Any
  params: Any
  mesh: Any

  def embed(self, wavs: np.ndarray) -> dict[str, np.ndarray]:
    """`wavs: [clips, samples]` -> {"embedding": [clips, dim], ["layer_embeddings": [clips, layers, dim]]}."""
    b = self.config.embed.batch_size
    batches = ({"wav": wavs[i:i + b], "index": np.arange(i, min(i + b, len(wavs)))} for i in range(0, len(wavs), b))
    return embed_lib.embed_batches(self.forward, self.params, batches, batch_size=b, mesh=self.mesh,
                                   num_clips=len(wavs), progress=False)


def _load_encoder(model_dir: str, all_layers: bool) -> _Encoder:
  """Rebuilds an exported model from its folder alone: encoders from their converted checkpoints, heads from
  head.npz, LoRA off (the update is merged into the weights)."""
  with open(os.path.join(model_dir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(os.path.join(model_dir, "encoders.json")) as f:
    slots = json.load(f)
  for slot in slots:
    config.model[slot["field"]] = os.path.join(model_dir, slot["dir"])
  config.lora.enabled = False
  with open(os.path.join(model_dir, "label_space.json")) as f:
    num_classes = len(json.load(f)["classes"])
  system = networks.build_network(config, num_classes)
  tree, _ = experiment.init_trainable(config, system, jax.random.key(0))
  flat = tu.flatten_dict(jax.device_get(tree["model"]))
  with np.load(os.path.join(model_dir, "head.npz")) as data:
    rest = {tuple(k.split("/")): data[k] for k in data.files}
  expected = {k: v.shape for k, v in flat.items() if not any(k[:len(s["path"])] == tuple(s["path"]) for s in slots)}
  checkpoint_io.check_state_dict({"/".join(k): v for k, v in rest.items()},
                                 {"/".join(k): v for k, v in expected.items()}, source=f"{model_dir}/head.npz")
  params = tu.unflatten_dict({**flat, **rest})
  mesh = shd.data_mesh()
  params = shd.replicate(jax.tree.map(lambda x: np.asarray(x, np.float32), params), mesh)
  microbatch = microbatch_lib.resolve(config.embed.get("microbatch", microbatch_lib.AUTO))
  return _Encoder(config, embed_lib.make_forward(system.outputs, mesh, all_layers, microbatch), params, mesh)


@dataclasses.dataclass(frozen=True)
class Detection:
  """Result for one clip: fused score, decision (1 anomalous), threshold, nearest normal training clip
  (relative to the training dataset root) and each model's normalised score."""

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
    path = os.path.join(self.directory, MANIFEST)
    if not os.path.isfile(path):
      raise DetectorError(f"{self.directory}: not a detector folder (no {MANIFEST}); the pipeline writes one "
                          "to WORKDIR/detector")
    with open(path) as f:
      manifest = json.load(f)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
      raise DetectorError(f"{path}: expected format {FORMAT!r} version {VERSION}, found "
                          f"{manifest.get('format')!r} version {manifest.get('version')!r}")
    self.manifest = manifest
    self.system = manifest["system"]
    self.models = manifest["models"]
    self.weights = {m["key"]: m["weight"] for m in self.models}
    self.thresholds = {tuple(k.split("/", 1)): v for k, v in manifest["thresholds"].items()}
    self.scorers = {}
    for m in self.models:
      scorer_path = os.path.join(self.directory, "models", m["key"], "scorer.npz")
      if not os.path.isfile(scorer_path):
        raise DetectorError(f"{self.directory}: model {m['key']} has no scorer.npz")
      self.scorers[m["key"]] = detector_lib.Scorer.load(scorer_path)
    self._encoders: dict[str, _Encoder] = {}

  @property
  def sections(self) -> list[tuple[str, str]]:
    """The (machine, section) pairs the detector can score."""
    return sorted(self.thresholds)

  @property
  def machines(self) -> list[str]:
    return sorted({m for m, _ in self.thresholds})

  def _encoder(self, key: str) -> _Encoder:
    if key not in self._encoders:
      entry = next(m for m in self.models if m["key"] == key)
      self._encoders[key] = _load_encoder(os.path.join(self.directory, "models", key), entry["layers"] == "all")
    return self._encoders[key]

  def check_section(self, machine: str, section: str) -> None:
    """Raises ValueError naming the known sections when (machine, section) was not trained."""
    if (machine, section) not in self.thresholds:
      known = ", ".join(f"{m} section {s}" for m, s in self.sections)
      raise ValueError(f"the detector knows no machine type {machine!r} section {section!r}; it was trained "
                       f"on: {known}")

  def embeddings(self, paths: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """{trained model key: its embed outputs for the wav files `paths`} (raises WavError on bad files)."""
    out = {}
    wav_cache: dict[tuple[int, float], np.ndarray] = {}
    for m in self.models:
      if m["sources"]:
        continue
      encoder = self._encoder(m["key"])
      data = encoder.config.data
      shape = (int(data.sample_rate), float(data.clip_seconds))
      if shape not in wav_cache:
        wav_cache[shape] = np.stack([wavlib.load_wav(p, sample_rate=shape[0], duration_s=shape[1],
                                                     strict=bool(data.get("strict", False))) for p in paths])
      out[m["key"]] = encoder.embed(wav_cache[shape])
    return out

  def score(self, paths: Sequence[str], machines: Sequence[str], sections: Sequence[str]) -> list[Detection]:
    """Scores wav files of known (machine, section)s; returns one `Detection` per path, in order."""
    for machine, section in zip(machines, sections):
      self.check_section(machine, section)
    records = [records_lib.ClipRecord(path=p, machine=m, section=s, split=records_lib.SPLIT_TEST)
               for p, m, s in zip(paths, machines, sections)]
    embeddings = self.embeddings(paths)
    per_model: dict[str, detector_lib.Scores] = {}
    vectors: dict[str, np.ndarray] = {}
    for m in self.models:
      spec = systems.ModelSpec(key=m["key"], name=m["name"], train=None, sources=tuple(m["sources"]),
                               layers=m["layers"], scorer={})
      vectors[m["key"]] = systems.scorer_vectors(spec, embeddings)
      per_model[m["key"]] = detector_lib.score(self.scorers[m["key"]], vectors[m["key"]], records)
    keys = [k for k, w in self.weights.items() if w]
    fused = sum(self.weights[k] * per_model[k].normalized for k in keys)
    nearest = self._fused_nearest(keys, vectors, records)
    out = []
    for i, r in enumerate(records):
      threshold = self.thresholds[(r.machine, r.section)]
      out.append(Detection(path=r.path, machine=r.machine, section=r.section, score=float(fused[i]),
                           decision=int(fused[i] > threshold), threshold=float(threshold),
                           nearest_train_clip=nearest[i],
                           model_scores={k: float(per_model[k].normalized[i]) for k in self.weights}))
    return out

  def _fused_nearest(self, keys: Sequence[str], vectors: Mapping[str, np.ndarray],
                     records: Sequence[records_lib.ClipRecord]) -> list[str]:
    """Per clip, the training clip with the smallest weighted sum of normalised cosine distances."""
    out = [""] * len(records)
    first = self.scorers[keys[0]]
    for key, idx in detector_lib.group_by_section(records).items():
      train_clip = first.sections[key].train_clip
      total = np.zeros((len(idx), len(train_clip)))
      for k in keys:
        scorer = self.scorers[k]
        state = scorer.sections[key]
        x = features.concat_layers(vectors[k][idx], scorer.config["layers"],
                                   normalize_layers=scorer.config["normalize_layers"])
        original = ~state.bank_synthetic
        row_of_clip = {int(c): j for j, c in zip(np.flatnonzero(original), state.bank_clip[original])}
        bank = state.bank[[row_of_clip[int(c)] for c in train_clip]]
        distance = 1.0 - knn.l2_normalize(x) @ bank.T
        total += self.weights[k] * (distance - state.mean) / state.std
      best = train_clip[np.argmin(total, axis=1)]
      for j, i in enumerate(idx):
        out[i] = first.train_paths[int(best[j])]
    return out
