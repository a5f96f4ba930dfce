"""A trained system as a self-contained folder (the detector): its layout, and scoring new recordings with it.

The folder (`asd_jax.detector.export` writes it; nothing of the training data is in it):

  <dir>/detector.json                 format, system name, fusion weights per model, per-section decision
                                      thresholds, threshold settings, the models and their order (with each LoRA
                                      model's alpha), and `input`: how the models read a recording (channel
                                      policy, sample rate, clip length) and the file formats of the training
                                      clips (channel counts, sample rates, sample formats, with how many clips
                                      had each)
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

Input formats. A recording is read as the models read their clips: with their channel policy (`data.channels`,
`asd_jax.audio.channels`; one per detector, as the pipeline reads every clip with one), resampled to their rate.
Against the training clips' formats recorded in `detector.json`:
  * a recording the channel policy cannot read (`far` or `cancel`, which need a near/far pair, given a mono or an
    8-channel file) is an error naming the file: there is no waveform the models were trained on to give them;
  * a channel count, sample rate or sample format the training clips did not have (an 8-microphone MIMII clip, or
    a mono one, against a detector trained on mono DCASE 2023 clips with `near`; 48 kHz against 16 kHz) is a
    warning, `Detection.warning`, which `detect` prints with the scores: the policy still defines the waveform
    (channel 0, the mean, the resampled signal), and another recorder may hold the same microphone, but it may as
    well be another microphone or array than the one the thresholds were fitted on, whose scores are then not
    comparable with them. Sample formats differ least (every one is read as float32 in [-1, 1]), but a change of
    format often means a change of recording chain.
"""

from __future__ import annotations

import collections
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
from asd_jax.audio import channels as channels_lib
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
VERSION = 5  # 3: config.model.network (was model.encoder); 4: detector.json "input" (policy, training
# formats); 5: shared encoder folders and LoRA factors apart
MANIFEST = "detector.json"  # written last: a folder without it is not a detector
INPUT = "input"  # detector.json's record of how recordings are read and of the training clips' formats
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


def _describe(c: datasets.WavConfig) -> str:
  return f"{c.sample_rate} Hz, {c.duration_s:g} s clips, channel policy {c.channels!r}"


def models_wav_config(configs: Mapping[str, ml_collections.ConfigDict], where: str) -> datasets.WavConfig:
  """The one way the models of a detector read a clip (`datasets.wav_config` of each config's `data`).

  Raises DetectorError (naming `where` and each model's reading) when they differ: a detector reads a
  recording once for all its models."""
  found = {key: datasets.wav_config(config.data) for key, config in configs.items()}
  if len(set(found.values())) != 1:
    listed = "; ".join(f"{key}: {_describe(c)}" for key, c in found.items())
    raise DetectorError(f"{where}: its models read clips differently ({listed}); one detector reads a recording "
                        "one way for all its models: one sample rate, clip length and channel policy")
  return next(iter(found.values()))


@dataclasses.dataclass(frozen=True)
class TrainingFormats:
  """The file formats of a detector's training clips (its memory banks' normal clips): how many clips had each
  channel count, sample rate (Hz) and sample format (soundfile's subtype, e.g. "PCM_16")."""

  channel_counts: dict[int, int]
  sample_rates: dict[int, int]
  sample_formats: dict[str, int]

  @classmethod
  def of(cls, paths: Sequence[str]) -> TrainingFormats:
    """The formats of the files `paths` (headers only; `wav.WavError` naming an unreadable one)."""
    formats = [wavlib.file_format(p) for p in paths]
    tally = lambda values: dict(sorted(collections.Counter(values).items()))  # noqa: E731
    return cls(channel_counts=tally(f.channels for f in formats), sample_rates=tally(f.sample_rate for f in formats),
               sample_formats=tally(f.subtype for f in formats))

  def to_json(self) -> dict[str, dict[str, int]]:
    return {"channel_counts": {str(k): v for k, v in self.channel_counts.items()},
            "sample_rates": {str(k): v for k, v in self.sample_rates.items()},
            "sample_formats": dict(self.sample_formats)}

  @classmethod
  def from_json(cls, data: Mapping[str, Mapping[str, int]]) -> TrainingFormats:
    return cls(channel_counts={int(k): int(v) for k, v in data["channel_counts"].items()},
               sample_rates={int(k): int(v) for k, v in data["sample_rates"].items()},
               sample_formats={str(k): int(v) for k, v in data["sample_formats"].items()})


def input_record(wav_config: datasets.WavConfig, training: TrainingFormats) -> dict[str, Any]:
  """detector.json's `input`: how the models read a recording, and the training clips' formats."""
  return {"channel_policy": wav_config.channels, "sample_rate": wav_config.sample_rate,
          "clip_seconds": wav_config.duration_s, "training_clips": training.to_json()}


def _values(tally: Mapping[Any, int]) -> str:
  return " or ".join(str(k) for k in tally)


def _policy_reads(policy: str, num_channels: int) -> str:
  """What channel policy `policy` makes of a recording of `num_channels` channels (it can read it)."""
  if policy == channels_lib.MEAN and num_channels > 1:
    return f"the mean of its {num_channels} channels"
  if num_channels == 1:
    return "its one channel"
  return {channels_lib.NEAR: "its channel 0", channels_lib.FAR: "its channel 1", channels_lib.MEAN: "its channel",
          channels_lib.CANCEL: "its channel 0 less what channel 1 predicts"}[policy]


def _load_network(directory: str, key: str, num_classes: int, lora_alpha: float | None
                  ) -> tuple[ml_collections.ConfigDict, networks.Network, Any]:
  """`(config, network, params)` of exported model `key`, from the detector folder alone (LoRA factors merged)."""
  folder = model_dir(directory, key)
  config = ml_collections.ConfigDict(_read_json(os.path.join(folder, CONFIG)))
  slots = _read_json(os.path.join(folder, ENCODERS))
  for slot in slots:
    config.model[slot["field"]] = os.path.join(directory, slot["dir"])
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
  time of the most anomalous window, `dropped_s` the seconds at the end that are in no window, `warning` what
  in the recording's format the training clips did not have (`Detector.input_warning`).
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
  warning: str = ""  # how the recording's format differs from the training clips' ("" when it does not)


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
    try:
      self.training_formats = TrainingFormats.from_json(manifest[INPUT]["training_clips"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise DetectorError(f"{path}: no readable {INPUT!r} record of the training clips' formats ({e!r})") from e
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

  def training_clips(self, machine: str, section: str) -> int:
    """How many normal training clips the section's scores are normalised over (every model has the same)."""
    return len(self.scorers[fusion.weighted(self.weights)[0]].sections[(machine, section)].train_clip)

  def _config(self, key: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(_read_json(os.path.join(model_dir(self.directory, key), CONFIG)))

  @property
  def wav_config(self) -> datasets.WavConfig:
    """How the models read a clip (sample rate, clip length, padding, channel policy): the same for every network
    model, and what detector.json's `input` says (DetectorError otherwise)."""
    if self._wav_config is None:
      c = models_wav_config({m["key"]: self._config(m["key"]) for m in self.models if not m["sources"]},
                            self.directory)
      recorded = self.manifest[INPUT]
      said = (recorded.get("sample_rate"), recorded.get("clip_seconds"), recorded.get("channel_policy"))
      if said != (c.sample_rate, c.duration_s, c.channels):
        raise DetectorError(f"{os.path.join(self.directory, MANIFEST)}: says its models read {said[0]} Hz, "
                            f"{said[1]} s clips, channel policy {said[2]!r}, but their configs read {_describe(c)}; "
                            "the folder was changed after it was exported: export it again (re-run the pipeline)")
      self._wav_config = c
    return self._wav_config

  def _readable_format(self, path: str) -> wavlib.FileFormat:
    """The header of `path`; `wav.WavError` naming it when the detector's channel policy cannot read it."""
    fmt = wavlib.file_format(path)
    policy = self.wav_config.channels
    if channels_lib.channel_problem(policy, fmt.channels):
      raise wavlib.WavError(
          f"{path}: {fmt.channels} channel(s), but this detector reads recordings with channel policy {policy!r}, "
          "which needs exactly 2 (channel 0 near the machine, channel 1 far); its models were trained on "
          f"{_values(self.training_formats.channel_counts)}-channel clips read that way and cannot score it")
    return fmt

  def input_warning(self, path: str) -> str:
    """"" when the recording `path` has a channel count, sample rate and sample format its training clips had;
    else what differs (without the path), e.g. "8 channel(s) where the training clips had 1 (channel policy
    'near' reads its channel 0)". Raises `wav.WavError` naming the file when the channel policy cannot read it
    (see the module docstring)."""
    fmt = self._readable_format(path)
    c, t = self.wav_config, self.training_formats
    differences = []
    if fmt.channels not in t.channel_counts:
      differences.append(f"{fmt.channels} channel(s) where the training clips had {_values(t.channel_counts)} "
                         f"(channel policy {c.channels!r} reads {_policy_reads(c.channels, fmt.channels)})")
    if fmt.sample_rate not in t.sample_rates:
      differences.append(f"{fmt.sample_rate} Hz where the training clips had {_values(t.sample_rates)} Hz "
                         f"(resampled to the models' {c.sample_rate} Hz)")
    if fmt.subtype not in t.sample_formats:
      differences.append(f"sample format {fmt.subtype} where the training clips had {_values(t.sample_formats)}")
    return "; ".join(differences)

  @property
  def clip_samples(self) -> int:
    """Samples of one clip (one window of a long recording)."""
    return self.wav_config.num_samples

  def read(self, path: str) -> windows_lib.Windows:
    """The windows of the recording `path` (`audio.windows`), as the models read a clip: decoded, resampled,
    cut, and each window turned into one waveform by the models' channel policy, as `wav.load_wav` reads a
    clip. Raises `wav.WavError` naming the file when the policy cannot read it (see the module docstring). A
    recording shorter than half a clip is padded with a warning naming it; one shorter than a tenth of a clip
    raises `wav.WavError` naming it (`wav.check_duration`)."""
    c = self.wav_config
    self._readable_format(path)
    data = wavlib.read_channels(path, sample_rate=c.sample_rate, strict=c.strict, channels=c.channels)
    warning = wavlib.check_duration(path, data.shape[-1] / c.sample_rate, c.duration_s)
    if warning:
      logging.warning("%s", warning)
    return windows_lib.split(data, self.clip_samples, c.sample_rate, pad=c.pad, channels=c.channels)

  def network(self, key: str) -> tuple[ml_collections.ConfigDict, networks.Network, Any]:
    """`(config, network, params)` of model `key` (loaded once)."""
    if key not in self._networks:
      entry = next(m for m in self.models if m["key"] == key)
      try:
        self._networks[key] = _load_network(self.directory, key, entry["num_classes"], entry.get("lora_alpha"))
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
    warnings = [self.input_warning(p) for p in paths]
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
                           windows=per_window, peak_s=float(w.starts_s[peak - rows[0]]), dropped_s=w.dropped_s,
                           warning=warnings[i]))
    return out
