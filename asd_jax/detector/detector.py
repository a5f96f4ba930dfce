"""A trained system as a self-contained folder (the detector): its layout, and scoring new recordings with it.

The folder (`asd_jax.detector.export` writes it; nothing of the training data is in it):

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
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import flax.traverse_util as tu
import jax
import ml_collections
import numpy as np
from absl import logging

from asd_jax import atomic
from asd_jax import errors
from asd_jax.audio import wav as wavlib
from asd_jax.audio import windows as windows_lib
from asd_jax.checkpoints import converted
from asd_jax.data import datasets
from asd_jax.data import records as records_lib
from asd_jax.embedding import extract
from asd_jax.models import networks
from asd_jax.scoring import features
from asd_jax.scoring import fusion
from asd_jax.scoring import scorer as scorer_lib

FORMAT = "asd_jax.detector"
VERSION = 3  # 3: config.model.network (was model.encoder)
MANIFEST = "detector.json"  # written last: a folder without it is not a detector
MODELS = "models"
CONFIG = "config.json"
ENCODERS = "encoders.json"
ENCODERS_DIR = "encoders"
HEAD = "head.npz"
SCORER = "scorer.npz"


def model_dir(directory: str, key: str) -> str:
  """`<dir>/models/<key>`."""
  return os.path.join(directory, MODELS, key)


def section_id(machine: str, section: str) -> str:
  """The manifest's key of a section's threshold, `<machine>/<section>`."""
  return f"{machine}/{section}"


EXPORT_AGAIN = "export the detector again (re-run the pipeline on its workdir, which writes WORKDIR/detector)"


class DetectorError(ValueError):
  """A detector folder that is missing, incomplete, damaged or of another format."""


def _model_files(entry: Mapping[str, Any]) -> tuple[str, ...]:
  """The files of an exported model's folder: a network model's and a concatenation model's (`export`)."""
  return (SCORER,) if entry["sources"] else (CONFIG, ENCODERS, HEAD, SCORER)


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise DetectorError(f"{path}: unreadable ({errors.reason(e)}); {EXPORT_AGAIN}") from e


def _load_network(folder: str, num_classes: int) -> tuple[ml_collections.ConfigDict, networks.Network, Any]:
  """`(config, network, params)` of an exported model, from its folder alone."""
  config = ml_collections.ConfigDict(_read_json(os.path.join(folder, CONFIG)))
  slots = _read_json(os.path.join(folder, ENCODERS))
  for slot in slots:
    config.model[slot["field"]] = os.path.join(folder, slot["dir"])
  network = networks.build_network(config, num_classes)
  expected = tu.flatten_dict(jax.eval_shape(network.init, jax.random.key(0))[0])
  flat = {}
  for path, _, subtree in network.pretrained:
    flat.update({tuple(path) + k: v for k, v in tu.flatten_dict(subtree).items()})
  try:
    with np.load(os.path.join(folder, HEAD), allow_pickle=False) as data:
      flat.update({tuple(k.split("/")): data[k] for k in data.files})
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DetectorError(f"{os.path.join(folder, HEAD)}: unreadable ({errors.reason(e)}); {EXPORT_AGAIN}") from e
  converted.check_state_dict({"/".join(k): v for k, v in flat.items()},
                                 {"/".join(k): v.shape for k, v in expected.items()}, source=folder)
  params = tu.unflatten_dict({k: np.asarray(v) for k, v in flat.items()}) if flat else {}
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
    missing = [os.path.join(model_dir(self.directory, m["key"]), name) for m in self.models
               for name in _model_files(m) if not os.path.isfile(os.path.join(model_dir(self.directory, m["key"]),
                                                                              name))]
    if missing:
      raise DetectorError(f"{self.directory}: an incomplete detector folder, {len(missing)} file(s) missing: "
                          f"{', '.join(missing)}; {EXPORT_AGAIN}")
    self.scorers = {m["key"]: scorer_lib.Scorer.load(os.path.join(model_dir(self.directory, m["key"]), SCORER))
                    for m in self.models}
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

  def _config(self, key: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(_read_json(os.path.join(model_dir(self.directory, key), CONFIG)))

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
      try:
        self._networks[key] = _load_network(model_dir(self.directory, key), entry["num_classes"])
      except converted.CheckpointError as e:  # an exported encoder (missing chunks, other shapes, NaN)
        problem = f"checkpoint {e.source}: {e.problem}" if isinstance(e, converted.DamagedCheckpointError) else str(e)
        raise DetectorError(f"{self.directory}: model {key}: {problem}; {EXPORT_AGAIN}") from e
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
