"""What the report's figures need, collected from a pipeline workdir into plain arrays (read through
`asd_jax.pipeline.workdir`, the module that knows the workdir's files; nothing here names one).

It reads `results.json` (the models and systems), `tables.md`, `provenance.json`, every model's test scores and
fitted scorer, every fused system's saved scores and thresholds, the embedded models' clip records and
embeddings, and every training log (`metrics.jsonl`: fine-tuning under models/<key>/, anything else such as
pre-training). Nothing is recomputed that the pipeline saved: the systems' test scores, decisions and
thresholds are read from their saved fused scores. What it did not save is rebuilt through the library it came
from: a system's fused normal training scores (what its thresholds were fitted on) by
`scoring.fusion.fused_train_scores` from the saved scorers, and a model's test vectors as its scorer saw them by
`scoring.features.model_vectors` and `concat_layers`. Nothing here imports JAX or matplotlib.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from asd_jax.data import labels as labels_lib
from asd_jax.data import records as records_lib
from asd_jax.evaluation.protocol import Protocol
from asd_jax.pipeline import workdir as workdir_lib
from asd_jax.scoring import features
from asd_jax.scoring import fusion
from asd_jax.scoring import knn
from asd_jax.scoring import scorer as scorer_lib

SectionKey = tuple[str, str]
MODEL, SYSTEM = "model", "system"
WorkdirError = workdir_lib.WorkdirError


@dataclasses.dataclass(frozen=True)
class ScorerInfo:
  """A model or a fused system, as the tables name it."""

  key: str  # model key (scores/<key>_*.npz) or system name
  name: str  # table name: "FBEATs", "system1", ...
  kind: str  # MODEL or SYSTEM
  weights: dict[str, float] = dataclasses.field(default_factory=dict)  # systems: model key -> weight
  note: str = ""
  reference: bool = False  # a reference row of Table 1 (a model no system fuses: frozen encoders, log-mel)


@dataclasses.dataclass
class SectionData:
  """Everything about one (machine, section) the figures need.

  Attributes:
    test_paths: [n] test clips; test_labels [n] 0 normal / 1 anomalous / -1 unknown; test_domains [n] 0 source /
      1 target / -1 unknown; test_classes [n] attribute class ("fan/m-n_W").
    test_scores: {scorer key: [n] test scores} (models: normalised; systems: fused).
    train_domains: [m] 0 source / 1 target of the section's normal training clips (the scorers' order).
    train_scores: {scorer key: [m] normalised leave-one-out training scores} (systems: fused).
    thresholds: {scorer key: decision threshold on its score scale}.
  """

  machine: str
  section: str
  test_paths: list[str]
  test_labels: np.ndarray
  test_domains: np.ndarray
  test_classes: np.ndarray
  test_scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  train_domains: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
  train_scores: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  thresholds: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def labelled(self) -> bool:
    """Every test clip's label known (normal or anomalous)."""
    return bool(len(self.test_labels)) and bool(np.all(self.test_labels >= 0))


@dataclasses.dataclass(frozen=True)
class TrainingLog:
  """One training run's log (`metrics.jsonl`): its folder relative to the workdir, its rows, and the model it
  trained (if known)."""

  name: str  # e.g. "models/fbeats"
  rows: list[dict[str, Any]]
  model_key: str = ""  # set for fine-tuning runs of a model of results.json
  kind: str = "fine-tuning"  # or "other" (pre-training and anything else)


@dataclasses.dataclass
class Collected:
  """What the report shows of a pipeline workdir (see the module docstring)."""

  path: str
  results: dict[str, Any]
  tables_markdown: str
  provenance: dict[str, Any] | None  # of the pipeline invocation that wrote the workdir
  scorers: list[ScorerInfo]
  sections: list[SectionData]
  logs: list[TrainingLog]
  notes: list[str]  # what could not be shown, or was shown with an assumption

  def scorer(self, key: str) -> ScorerInfo:
    return next(s for s in self.scorers if s.key == key)

  @property
  def models(self) -> list[ScorerInfo]:
    return [s for s in self.scorers if s.kind == MODEL]

  @property
  def systems(self) -> list[ScorerInfo]:
    return [s for s in self.scorers if s.kind == SYSTEM]

  @property
  def model_entries(self) -> dict[str, dict[str, Any]]:
    """results.json's entry of every model, by key."""
    return self.results.get("models", {})

  @property
  def protocol(self) -> Protocol:
    """The year's rules the pipeline evaluated by (results.json; 2022-2026 for a workdir written before it said)."""
    return protocol_of(self.results)


def protocol_of(results: dict[str, Any]) -> Protocol:
  return Protocol(results.get("protocol", Protocol.DCASE2022.value))


def _label(record: records_lib.ClipRecord | None) -> int:
  if record is None or record.label not in (records_lib.NORMAL, records_lib.ANOMALY):
    return -1
  return int(record.label == records_lib.ANOMALY)


def _domain(record: records_lib.ClipRecord | None, protocol: Protocol = Protocol.DCASE2022) -> int:
  """0 source, 1 target, -1 unknown: an evaluation set's hidden domain, or a year without domains (DCASE 2020,
  whose names the parser reads as source: shown as unknown, not as source)."""
  if record is None or not protocol.has_domains or record.domain not in (records_lib.SOURCE, records_lib.TARGET):
    return -1
  return int(record.domain == records_lib.TARGET)


def _class(record: records_lib.ClipRecord | None) -> str:
  """The clip's attribute class ("fan/m-n_W"); "<machine>/attributes unknown" for a clip whose name carries none
  (an evaluation set's test clip, DCASE 2020)."""
  if record is None:
    return "unknown"
  if record.kind == records_lib.KIND_MACHINE and not record.attributes:
    return f"{record.machine}/attributes unknown"
  return labels_lib.class_of(record).name


def training_logs(path: str, model_keys: Mapping[str, str]) -> list[TrainingLog]:
  """Every training log of the workdir (`pipeline.workdir.training_logs`), fine-tuning runs first."""
  logs = []
  for name, rows in workdir_lib.training_logs(path):
    parts = name.split(os.sep)
    key = parts[1] if len(parts) == 2 and parts[0] == workdir_lib.MODELS and parts[1] in model_keys else ""
    logs.append(TrainingLog(name=name, rows=rows, model_key=key, kind="fine-tuning" if key else "other"))
  order = list(model_keys)
  return sorted(logs, key=lambda r: (r.kind != "fine-tuning", order.index(r.model_key) if r.model_key else 0,
                                     r.name))


# ------------------------------------------------------------------------------------------------ read


def read(path: str) -> Collected:
  """Collects what the report shows of the pipeline workdir `path` (see the module docstring).

  Required: results.json, tables.md, scores/<key>_test.npz and scores/<key>_scorer.npz of every model,
  scores/<system>_fused.npz of every system with a weight on a model of the run. Optional: provenance.json,
  embeddings_records.json (without one, the test clips' machine and section are unknown: an error),
  metrics.jsonl.

  Raises:
    WorkdirError naming the file that is missing or unreadable.
  """
  path = os.path.abspath(path)
  results = workdir_lib.read_results(path)
  protocol = protocol_of(results)
  tables = workdir_lib.read_tables(path)
  info = workdir_lib.read_provenance(path)
  notes: list[str] = []
  records = workdir_lib.clip_records(path)

  model_entries = results.get("models", {})
  if not model_entries:
    raise WorkdirError(f"{workdir_lib.path(path, workdir_lib.RESULTS)}: lists no models")
  scorer_objects: dict[str, scorer_lib.Scorer] = {}
  normalized: dict[str, np.ndarray] = {}
  test_paths: list[str] | None = None
  for key in model_entries:
    scores, paths = workdir_lib.read_test_scores(path, key)
    if test_paths is None:
      test_paths = paths
    elif paths != test_paths:
      raise WorkdirError(f"{workdir_lib.test_scores_path(path, key)}: other test clips than "
                         f"{next(iter(model_entries))}'s")
    normalized[key] = scores
    scorer_objects[key] = workdir_lib.read_scorer(path, key)
  assert test_paths is not None
  test_records = [records.get(p) or records_lib.ClipRecord(path=p, machine="", section="", split="test")
                  for p in test_paths]
  if any(not r.machine for r in test_records):
    raise WorkdirError(f"{path}: {sum(not r.machine for r in test_records)} test clips of scores/ are in no "
                       "models/<key>/embeddings_records.json; cannot tell their machine and section")

  # Systems' models first, then the reference rows (as Table 1 orders them).
  order = sorted(model_entries, key=lambda k: bool(model_entries[k].get("reference")))
  scorers = [ScorerInfo(key=k, name=model_entries[k].get("name", k), kind=MODEL,
                        reference=bool(model_entries[k].get("reference"))) for k in order]
  fused: dict[str, tuple[workdir_lib.SavedFused, dict[SectionKey, np.ndarray]]] = {}
  for name, entry in results.get("systems", {}).items():
    weights = {k: float(w) for k, w in entry.get("weights", {}).items()}
    if not any(weights.values()):
      notes.append(f"system {name} not drawn: {entry.get('note') or 'no weight on a model of this run'}")
      continue
    saved = workdir_lib.read_fused(path, name)
    if saved.paths != test_paths:
      raise WorkdirError(f"{workdir_lib.fused_path(path, name)}: other test clips than the "
                         "models' scores/<key>_test.npz (stale files? re-run the pipeline)")
    try:
      train = fusion.fused_train_scores(weights, scorer_objects)
    except (KeyError, ValueError) as e:
      raise WorkdirError(f"{workdir_lib.path(path, workdir_lib.RESULTS)}: system {name}'s weights {weights} do not fit "
                         f"the saved scorers ({e})") from e
    fused[name] = (saved, train)
    scorers.append(ScorerInfo(key=name, name=name, kind=SYSTEM, weights=weights, note=entry.get("note", "")))

  first = scorer_objects[next(iter(model_entries))]
  train_records = [records.get(p) for p in first.train_paths]
  sections = []
  for (machine, section), idx in records_lib.group_by_section(test_records).items():
    chosen = [test_records[i] for i in idx]
    data = SectionData(
        machine=machine, section=section, test_paths=[r.path for r in chosen],
        test_labels=np.array([_label(r) for r in chosen], np.int64),
        test_domains=np.array([_domain(r, protocol) for r in chosen], np.int64),
        test_classes=np.array([_class(r) for r in chosen]))
    state = first.sections[(machine, section)]
    data.train_domains = np.array([_domain(train_records[i], protocol) for i in state.train_clip], np.int64)
    for key, scorer in scorer_objects.items():
      own = scorer.sections[(machine, section)]
      data.test_scores[key] = normalized[key][idx]
      data.train_scores[key] = np.asarray(own.train_scores, np.float64)
      data.thresholds[key] = float(own.threshold)
    for name, (saved, train) in fused.items():
      data.test_scores[name] = saved.scores[idx]
      data.train_scores[name] = train[(machine, section)]  # what the system's threshold was fitted on
      if (machine, section) not in saved.thresholds:
        raise WorkdirError(f"{workdir_lib.fused_path(path, name)}: no threshold for {machine} "
                           f"section {section}")
      data.thresholds[name] = saved.thresholds[(machine, section)]
    sections.append(data)

  logs = training_logs(path, {k: e.get("name", k) for k, e in model_entries.items()})
  return Collected(path=path, results=results, tables_markdown=tables, provenance=info, scorers=scorers,
                   sections=sections, logs=logs, notes=notes)


# ------------------------------------------------------------------------------------------------ embeddings


def _embedded_keys(wd: Collected, key: str) -> list[str]:
  """The models whose embeddings model `key`'s scorer vectors are made of (itself, or a concatenation's
  sources)."""
  return list(wd.model_entries[key].get("sources") or [key])


def has_embeddings(wd: Collected, key: str) -> bool:
  """Whether the embeddings of model `key` (or of all its sources) are in the workdir."""
  return all(workdir_lib.has_embeddings(wd.path, k) for k in _embedded_keys(wd, key))


@dataclasses.dataclass(frozen=True)
class MapArrays:
  """One model's points in one section, as `report.embedding_map.MapPoints` takes them."""

  vectors: np.ndarray  # [n, dim] unit-norm, the scorer's space
  role: np.ndarray  # [n] 0 training clip, 1 SMOTE sample, 2 test clip
  domain: np.ndarray  # [n] 0 source / 1 target / -1 unknown
  label: np.ndarray  # [n] 0 normal / 1 anomalous / -1 unknown
  attribute_class: np.ndarray  # [n] str


def embedding_points(wd: Collected, key: str) -> dict[SectionKey, MapArrays]:
  """Per section: model `key`'s memory bank (training clips and SMOTE samples) and its test clips' vectors.

  The bank comes from the model's saved scorer; the test vectors are the embeddings turned into the scorer's
  vectors exactly as at scoring time (`features.model_vectors`, `features.concat_layers` in float64, L2
  normalisation, rounded to float32 like the bank).
  """
  entry = wd.model_entries[key]
  scorer = workdir_lib.read_scorer(wd.path, key)
  records = workdir_lib.clip_records(wd.path)
  test_records = [records[p] for s in wd.sections for p in s.test_paths]
  embeddings = {}
  for k in _embedded_keys(wd, key):
    embeddings[k] = workdir_lib.read_embeddings(wd.path, k, test_records)
  x = features.model_vectors(key, embeddings, layers=entry.get("layers", "last"),
                             sources=tuple(entry.get("sources") or ()))
  x = features.concat_layers(np.asarray(x, np.float64), scorer.config["layers"],
                             normalize_layers=scorer.config["normalize_layers"])
  x = knn.l2_normalize(x).astype(np.float32)
  row = {r.path: i for i, r in enumerate(test_records)}
  train = [records.get(p) for p in scorer.train_paths]
  out = {}
  for s in wd.sections:
    state = scorer.sections[(s.machine, s.section)]
    synthetic = np.asarray(state.bank_synthetic, bool)
    bank_records = [train[int(c)] for c in state.bank_clip]
    test_x = x[[row[p] for p in s.test_paths]]
    n_bank, n_test = len(state.bank), len(s.test_paths)
    out[(s.machine, s.section)] = MapArrays(
        vectors=np.concatenate([state.bank, test_x]).astype(np.float32),
        role=np.concatenate([np.where(synthetic, 1, 0), np.full(n_test, 2)]).astype(np.int64),
        domain=np.concatenate([np.asarray(state.bank_domain, np.int64) if wd.protocol.has_domains
                               else np.full(n_bank, -1), s.test_domains]),
        label=np.concatenate([np.zeros(n_bank, np.int64), s.test_labels]),
        attribute_class=np.concatenate([np.array([_class(r) for r in bank_records]), s.test_classes]))
  return out
