"""A trained system as a self-contained folder (the detector): its layout, and scoring new recordings with it.

The folder (`asd_jax.detector.export` writes it; nothing of the training data is in it):

  <dir>/detector.json                 format, system name, fusion weights per model, per-section decision
                                      thresholds, threshold settings, the models and their order (with each LoRA
                                      model's alpha)
  <dir>/encoders/<name>-<digest>/     each distinct encoder (BEATs or EAT) as a converted checkpoint (Orbax + JSON
                                      architecture), readable by the encoder's own `load()`, written once however
                                      many models start from it (`<digest>`: of its content): a fully fine-tuned
                                      model's encoder, a frozen one, or the base a LoRA model was trained on (the
                                      LoRA models of one encoder share the base: System 2-4's LBEATs and LEAT with
                                      Dual-Branch's branches)
  <dir>/models/<key>/encoders.json    which encoder folder goes where in the model's parameters
  <dir>/models/<key>/head.npz         the remaining parameters (heads), '/'-joined paths
  <dir>/models/<key>/lora.npz         a LoRA model's factors ('/'-joined module paths, ".../a", ".../b"), merged
                                      into its base on loading by the function the pipeline merged with
                                      (`models.lora_factors.merge_lora`), so the parameters are the pipeline's,
                                      bit for bit
  <dir>/models/<key>/config.json      the model's config (clip length, sample rate, front end, pooling, the batch
                                      size the pipeline embedded with)
  <dir>/models/<key>/scorer.npz       normal memory banks (with SMOTE entries), normalisation statistics,
                                      per-model thresholds, training clip names relative to the dataset root

`Detector(dir)` computes what the pipeline computed: it rebuilds each network from its config
(`models.networks`) with the exported parameters, embeds the wav files through the same function as the
pipeline (`embedding.extract.Embedder`: same decoding, padding, batch shape and compiled forward), and scores
them through the same fused path (`scoring.fusion`: per-model normalised scores, fusion, the section's threshold,
the nearest normal training clip). Neither loading nor scoring imports the training package.

`Detector.score` scores a recording over all of it: it is cut into consecutive windows of the models' clip
length (`audio.windows`: the last, partial window repeat-padded like a short clip when it is at least half a
clip long, dropped otherwise), every window is scored as a clip, and the recording's score is the maximum over
its windows (its decision: anomalous when any window is above the section's threshold, i.e. the peak window's
decision). A recording of one clip length is one window and scores exactly as the pipeline scores the clip.
The pipeline itself reads only a clip's first clip length (`asd_jax.data.datasets`).
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
from absl import logging

from asd_jax import atomic
from asd_jax.audio import wav as wavlib
from asd_jax.audio import windows as windows_lib
from asd_jax.checkpoints import converted
from asd_jax.data import datasets
from asd_jax.data import records as records_lib
from asd_jax.embedding import extract
from asd_jax.models import lora_factors
from asd_jax.models import networks
from asd_jax.scoring import features
from asd_jax.scoring import fusion
from asd_jax.scoring import scorer as scorer_lib

FORMAT = "asd_jax.detector"
VERSION = 4  # 4: shared encoder folders and LoRA factors apart (3: config.model.network, was model.encoder)
MANIFEST = "detector.json"  # written last: a folder without it is not a detector
MODELS = "models"
CONFIG = "config.json"
ENCODERS = "encoders.json"
ENCODERS_DIR = "encoders"
HEAD = "head.npz"
LORA = "lora.npz"
SCORER = "scorer.npz"


def model_dir(directory: str, key: str) -> str:
  """`<dir>/models/<key>`."""
  return os.path.join(directory, MODELS, key)


def section_id(machine: str, section: str) -> str:
  """The manifest's key of a section's threshold, `<machine>/<section>`."""
  return f"{machine}/{section}"


class DetectorError(ValueError):
  """A detector folder that is missing, incomplete or of another format."""


def _load_network(directory: str, key: str, num_classes: int, lora_alpha: float | None
                  ) -> tuple[ml_collections.ConfigDict, networks.Network, Any]:
  """`(config, network, params)` of exported model `key`, from the detector folder alone (LoRA factors merged)."""
  folder = model_dir(directory, key)
  with open(os.path.join(folder, CONFIG)) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(os.path.join(folder, ENCODERS)) as f:
    slots = json.load(f)
  for slot in slots:
    config.model[slot["field"]] = os.path.join(directory, slot["dir"])
  network = networks.build_network(config, num_classes)
  expected = tu.flatten_dict(jax.eval_shape(network.init, jax.random.key(0))[0])
  flat = {}
  for path, _, subtree in network.pretrained:
    flat.update({tuple(path) + k: v for k, v in tu.flatten_dict(subtree).items()})
  with np.load(os.path.join(folder, HEAD), allow_pickle=False) as data:
    flat.update({tuple(k.split("/")): data[k] for k in data.files})
  converted.check_state_dict({"/".join(k): v for k, v in flat.items()},
                                 {"/".join(k): v.shape for k, v in expected.items()}, source=folder)
  params = tu.unflatten_dict({k: np.asarray(v) for k, v in flat.items()}) if flat else {}
  lora_file = os.path.join(folder, LORA)
  if os.path.isfile(lora_file):
    if lora_alpha is None:
      raise DetectorError(f"{lora_file}: LoRA factors, but {MANIFEST} gives model {key} no lora_alpha")
    with np.load(lora_file, allow_pickle=False) as data:
      factors = tu.unflatten_dict({tuple(k.split("/")): data[k] for k in data.files})
    try:
      params = lora_factors.merge_lora({"model": params, "lora": factors}, alpha=lora_alpha)
    except (KeyError, TypeError, ValueError) as e:
      raise DetectorError(f"{lora_file}: the factors do not fit the model's parameters ({e})") from e
  return config, network, params


@dataclasses.dataclass(frozen=True)
class WindowScore:
  """One window of a recording: where it starts and how much of it is recording (seconds; a partial last
  window is padded to the clip length), its fused score, decision and nearest normal training clip."""

  start_s: float
  length_s: float
  score: float
  decision: int
  nearest_train_clip: str


@dataclasses.dataclass(frozen=True)
class Detection:
  """Result for one recording: fused score (the maximum over its windows), decision (1 anomalous: some window
  is above the threshold), threshold, nearest normal training clip of the peak window (relative to the training
  dataset root) and each weighted model's normalised score in that window.

  `windows` holds every window's score in time order (one for a clip of the clip length), `peak_s` the start
  time of the most anomalous window, `dropped_s` the seconds at the end that are in no window.
  """

  path: str
  machine: str
  section: str
  score: float
  decision: int
  threshold: float
  nearest_train_clip: str
  model_scores: dict[str, float]
  windows: tuple[WindowScore, ...] = ()
  peak_s: float = 0.0
  dropped_s: float = 0.0


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
      scorer_path = os.path.join(model_dir(self.directory, m["key"]), SCORER)
      if not os.path.isfile(scorer_path):
        raise DetectorError(f"{self.directory}: model {m['key']} has no {SCORER}")
      self.scorers[m["key"]] = scorer_lib.Scorer.load(scorer_path)
    # {section: [n_train]} the system's fused normal training scores (leave-one-out, stored in the scorers):
    # what its thresholds were fitted on, and what `detect --plot_dir` draws.
    try:
      self.train_scores = fusion.fused_train_scores(self.weights, self.scorers)
    except (KeyError, ValueError) as e:
      raise DetectorError(f"{self.directory}: its scorers do not fit its weights ({e})") from e
    self._networks: dict[str, tuple[ml_collections.ConfigDict, networks.Network, Any]] = {}
    self._embedders: dict[str, extract.Embedder] = {}
    self._wav_config: datasets.WavConfig | None = None

  @property
  def sections(self) -> list[tuple[str, str]]:
    """The (machine, section) pairs the detector can score."""
    return sorted(self.thresholds)

  @property
  def machines(self) -> list[str]:
    return sorted({m for m, _ in self.thresholds})

  def training_clips(self, machine: str, section: str) -> int:
    """How many normal training clips the section's scores are normalised over (every model has the same)."""
    return len(self.scorers[fusion.weighted(self.weights)[0]].sections[(machine, section)].train_clip)

  def _config(self, key: str) -> ml_collections.ConfigDict:
    path = os.path.join(model_dir(self.directory, key), CONFIG)
    if not os.path.isfile(path):
      raise DetectorError(f"{self.directory}: model {key} has no {CONFIG}")
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))

  @property
  def wav_config(self) -> datasets.WavConfig:
    """How the models read a clip (sample rate, clip length, padding): the same for every network model."""
    if self._wav_config is None:
      found = {m["key"]: datasets.wav_config(self._config(m["key"]).data) for m in self.models if not m["sources"]}
      if len(set(found.values())) != 1:
        raise DetectorError(f"{self.directory}: its models read clips differently ({found}); one detector needs "
                            "one sample rate and clip length")
      self._wav_config = next(iter(found.values()))
    return self._wav_config

  @property
  def clip_samples(self) -> int:
    """Samples of one clip (one window of a long recording)."""
    return self.wav_config.num_samples

  def read(self, path: str) -> windows_lib.Windows:
    """The windows of the recording `path` (`audio.windows`), as the models read a clip: decoded, mixed to
    mono and resampled like `wav.load_wav`. A recording shorter than half a clip is padded with a warning
    naming it; one shorter than a tenth of a clip raises `wav.WavError` naming it (`wav.check_duration`)."""
    c = self.wav_config
    wav = wavlib.load_wav(path, sample_rate=c.sample_rate, duration_s=None, strict=c.strict)
    warning = wavlib.check_duration(path, wav.shape[0] / c.sample_rate, c.duration_s)
    if warning:
      logging.warning("%s", warning)
    return windows_lib.split(wav, self.clip_samples, c.sample_rate, pad=c.pad)

  def network(self, key: str) -> tuple[ml_collections.ConfigDict, networks.Network, Any]:
    """`(config, network, params)` of model `key` (loaded once)."""
    if key not in self._networks:
      entry = next(m for m in self.models if m["key"] == key)
      self._networks[key] = _load_network(self.directory, key, entry["num_classes"], entry.get("lora_alpha"))
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
      out[m["key"]] = self._embedder(m)(records)
    return out

  def waveform_embeddings(self, wavs: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """{network model key: its outputs for `wavs` [clips, clip_samples]}: the same forward pass as `embeddings`,
    on waveforms already read (the windows of recordings)."""
    out = {}
    for m in self.models:
      if m["sources"]:
        continue
      out[m["key"]] = self._embedder(m).waveforms(wavs)
    return out

  def _embedder(self, m: Mapping[str, Any]) -> extract.Embedder:
    if m["key"] not in self._embedders:  # the forward pass compiles once per model
      config, network, params = self.network(m["key"])
      self._embedders[m["key"]] = extract.Embedder(config, network, params, all_layers=m["all_layers"])
    return self._embedders[m["key"]]

  def score(self, paths: Sequence[str], machines: Sequence[str], sections: Sequence[str], *,
            windows: Sequence[windows_lib.Windows] | None = None) -> list[Detection]:
    """Scores wav files of known (machine, section)s over all of each (see the module docstring); returns one
    `Detection` per path, in order. `windows`: the recordings already read by `read` (read here otherwise)."""
    for machine, section in zip(machines, sections):
      self.check_section(machine, section)
    if windows is None:
      windows = [self.read(p) for p in paths]
    counts = [len(w.starts_s) for w in windows]
    owner = np.repeat(np.arange(len(paths)), counts)  # [all windows] the recording each window belongs to
    records = [records_lib.ClipRecord(path=paths[i], machine=machines[i], section=sections[i],
                                      split=records_lib.SPLIT_TEST) for i in owner]
    embeddings = self.waveform_embeddings(np.concatenate([w.wavs for w in windows]))
    vectors = {m["key"]: features.model_vectors(m["key"], embeddings, layers=m["layers"], sources=m["sources"])
               for m in self.models}
    model_scores = fusion.score_models(self.scorers, vectors, records)
    result = fusion.score_system(self.weights, self.scorers, model_scores, records, self.thresholds)
    train_paths = self.scorers[fusion.weighted(self.weights)[0]].train_paths
    out = []
    for i, (path, w) in enumerate(zip(paths, windows)):
      rows = np.flatnonzero(owner == i)
      peak = int(rows[np.argmax(result.scores[rows])])  # the first of equal maxima
      per_window = tuple(WindowScore(start_s=float(start), length_s=float(length), score=float(result.scores[j]),
                                     decision=int(result.decisions[j]),
                                     nearest_train_clip=train_paths[int(result.nearest_train_clip[j])])
                         for j, start, length in zip(rows, w.starts_s, w.lengths_s))
      out.append(Detection(path=path, machine=machines[i], section=sections[i], score=float(result.scores[peak]),
                           decision=int(result.decisions[peak]),
                           threshold=float(self.thresholds[(machines[i], sections[i])]),
                           nearest_train_clip=train_paths[int(result.nearest_train_clip[peak])],
                           model_scores={k: float(v[peak]) for k, v in result.model_scores.items()},
                           windows=per_window, peak_s=float(w.starts_s[peak - rows[0]]), dropped_s=w.dropped_s))
    return out
