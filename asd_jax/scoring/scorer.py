"""Fit and apply one model's kNN anomaly scorer, per machine type and section, as plain data.

`fit` takes the normal training embeddings of one model with their `ClipRecord`s and, for every
(machine, section): builds the memory bank (source clips plus SMOTE-oversampled target clips by
default), computes leave-one-out kNN scores of the training clips, their mean and standard
deviation (the normalisation statistics) and a decision threshold on the normalised scale.
`score` applies it to test embeddings. The fitted `Scorer` is NumPy arrays plus a JSON-able dict,
saved to and loaded from one `.npz` file, so an exported detector needs no training data.

Bank modes (`config.bank`):
  "joint": one bank of source + target + synthetic target embeddings; score = kNN distance.
  "target_only": target + synthetic target embeddings only.
  "domain_min": separate source and (target + synthetic) banks; score = min of the two
    kNN distances.
Leave-one-out statistics use the original training clips only: SMOTE points lie on segments
that start at a target clip, so a clip's distance to them would be close to zero.

Precision and batch independence: embeddings arrive as float32; the scorer concatenates and normalises them
and computes every cosine similarity in float64 (the bank is stored as float32 unit vectors and widened chunk
by chunk). A float64 dot product of D float32-valued unit vectors is within D * 2^-53 of the exact value in
any summation order, so a clip's distance, hence its score, is the same to ~1e-12 whichever other clips are
scored with it (in float32 the row count of the matrix product changed the rounding, which the normalisation
then magnified). The standard deviation of the normalisation is floored at `STD_FLOOR` (see there).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from asd_jax import atomic
from asd_jax.data import records as records_lib
from asd_jax.scoring import features, knn, smote, threshold as threshold_lib

BANK_MODES = ("joint", "target_only", "domain_min")
NORMALIZATIONS = ("loo", "none")
_FORMAT_VERSION = 2

# The floor on the standard deviation that normalises a section's distances (a project choice; the report
# states no floor). Normalised scores are (d - mean) / std, so a change of a distance d moves a score by that
# change / std. The distances d = 1 - <u, v> come from float32 embeddings, and float32 resolves a cosine distance
# to about eps32 = 2^-23 = 1.2e-7: rounding each component of the unit vectors u, v to float32 moves each by at
# most eps32 / 2 in norm, hence d by up to eps32 (and a float32 1 - <u, v> is itself quantised in steps of
# eps32 / 2). A model whose training clips embed almost alike (a tiny random network: one demo model's
# leave-one-out std was 3.4e-6, 28 eps32) would turn that rounding into large score changes. STD_FLOOR =
# 2^10 eps32 = 2^-13 (1.2e-4) keeps a change of one eps32 in a distance below 1/1024 of a normalised unit, and
# the ~20 eps32 by which the same network's embeddings differ across hardware (the fixture parity of BEATs and
# EAT is 2e-6 relative) below 0.02. The non-learned log-mel reference, the least spread model of the demo, has
# stds of 1.3e-3 and more, ten times the floor; a section's affine normalisation changes none of its AUCs.
EPS32 = float(np.finfo(np.float32).eps)
STD_FLOOR = 2.0**10 * EPS32

# Below this many normal training clips in a section, its normalisation is warned about (a project choice; the
# real sets have 1,000 per section, 2020: about 1,000 per machine ID). The leave-one-out std of n distances has a
# relative standard error of about 1 / sqrt(2 (n - 1)) (normal data): 24 % at n = 10, 71 % at n = 2; and the 90 %
# decision threshold (`threshold_quantile`) fitted on fewer than 10 scores lies beyond all of them but at most
# one. With 2 clips both leave-one-out distances are the one distance between them, the std falls to STD_FLOOR
# and a test clip's score is its distance over 1.2e-4: scores of +-1e4, every clip on one side of the threshold.
MIN_NORMALIZATION_CLIPS = 10


def few_clips_warning(machine: str, section: str, n_clips: int) -> str | None:
  """The warning for a section whose normalisation rests on `n_clips` < MIN_NORMALIZATION_CLIPS normal training
  clips (None from MIN_NORMALIZATION_CLIPS on)."""
  if n_clips >= MIN_NORMALIZATION_CLIPS:
    return None
  consequence = ("one distance, twice: the std is its floor and the scores reach +-1e4" if n_clips <= 2
                 else "its scores and decision threshold are rough")
  return (f"{machine} section {section}: the score normalisation (leave-one-out mean and std of the training "
          f"clips' kNN distances) rests on {n_clips} normal training clip(s), fewer than {MIN_NORMALIZATION_CLIPS}: "
          f"{consequence}")


def default_config() -> ml_collections.ConfigDict:
  """Scorer settings; where each default comes from is said per field."""
  return ml_collections.ConfigDict(
      dict(
          k=1,  # report: cosine distance to the nearest neighbour (1-NN); the score is the mean over k
          smote=True,  # report: SMOTE oversampling of the target domain to the source count
          smote_k_neighbors=2,  # report: SMOTE k=2
          smote_seed=0,  # project: any fixed seed, for reproducible banks
          bank="joint",  # project: one bank of source + target + SMOTE (the report's description); BANK_MODES
          layers=None,  # layer indices to concatenate, None = all (multi-layer fusion, report section 2.4)
          normalize_layers=True,  # project: L2-normalise each layer before concatenating, so layers weigh alike
          # "loo": (d - mean) / max(std, STD_FLOOR) with the leave-one-out distances of the training clips (the
          # report normalises before fusing; leave-one-out statistics are this project's reading); "none": raw
          normalization="loo",
          threshold_method="gamma",  # project: the DCASE baselines' gamma fit, 90th percentile (threshold_lib)
          threshold_quantile=0.9,
          query_chunk=knn.DEFAULT_QUERY_CHUNK,
          bank_chunk=knn.DEFAULT_BANK_CHUNK // 2,  # float64 blocks: the same memory as float32 ones
      )
  )


SectionKey = tuple[str, str]  # (machine, section)


@dataclasses.dataclass
class SectionState:
  """Fitted state of one (machine, section).

  Attributes:
    bank: [n_bank, dim] float32 unit-norm memory bank (normalised in float64, then rounded).
    bank_clip: [n_bank] int, index into the training clips given to `fit` of the clip each entry
      came from; for a SMOTE entry, the nearest original target clip.
    bank_domain: [n_bank] int8, 0 source, 1 target (synthetic entries are target).
    bank_synthetic: [n_bank] bool.
    train_clip: [n_train] int, the training clips (indices into `fit`'s input) of this section.
    train_scores: [n_train] normalised leave-one-out scores of those clips.
    mean, std: normalisation statistics of the raw leave-one-out scores (std floored at `STD_FLOOR`).
    threshold: decision threshold on the normalised scale.
  """

  bank: np.ndarray
  bank_clip: np.ndarray
  bank_domain: np.ndarray
  bank_synthetic: np.ndarray
  train_clip: np.ndarray
  train_scores: np.ndarray
  mean: float
  std: float
  threshold: float

  ARRAYS = ("bank", "bank_clip", "bank_domain", "bank_synthetic", "train_clip", "train_scores")
  SCALARS = ("mean", "std", "threshold")


@dataclasses.dataclass
class Scorer:
  """A fitted scorer for one model: settings, training clip paths, and one state per section."""

  config: dict[str, Any]
  train_paths: list[str]
  sections: dict[SectionKey, SectionState]

  def save(self, path: str) -> None:
    """Writes every array and a JSON header into one `.npz` file (no pickles)."""
    arrays = {}
    header = dict(version=_FORMAT_VERSION, config=self.config, train_paths=self.train_paths, sections=[])
    for i, ((machine, section), state) in enumerate(sorted(self.sections.items())):
      header["sections"].append(
          dict(machine=machine, section=section, **{k: float(getattr(state, k)) for k in SectionState.SCALARS})
      )
      for name in SectionState.ARRAYS:
        arrays[f"s{i}_{name}"] = getattr(state, name)
    arrays["header_json"] = np.array(json.dumps(header))
    atomic.save_npz(path, **arrays)

  @classmethod
  def load(cls, path: str) -> "Scorer":
    """Reads a file written by `save`."""
    with np.load(path, allow_pickle=False) as data:
      if "header_json" not in data:
        raise ValueError(f"{path}: not a saved Scorer (no header_json entry)")
      header = json.loads(str(data["header_json"]))
      if header.get("version") != _FORMAT_VERSION:
        raise ValueError(f"{path}: Scorer format {header.get('version')}, expected {_FORMAT_VERSION}")
      sections = {}
      for i, sec in enumerate(header["sections"]):
        arrays = {name: data[f"s{i}_{name}"] for name in SectionState.ARRAYS}
        sections[(sec["machine"], sec["section"])] = SectionState(
            **arrays, **{k: sec[k] for k in SectionState.SCALARS}
        )
    return cls(config=header["config"], train_paths=header["train_paths"], sections=sections)


@dataclasses.dataclass(frozen=True)
class Scores:
  """Scores of a list of clips.

  Attributes:
    raw: [n] kNN cosine distance (mean over k).
    normalized: [n] (raw - mean) / std with the section's training statistics.
    nearest_train_clip: [n] index into the scorer's `train_paths` of the nearest normal clip.
    decisions: [n] int, 1 where normalized > the section's threshold.
  """

  raw: np.ndarray
  normalized: np.ndarray
  nearest_train_clip: np.ndarray
  decisions: np.ndarray


def _as_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
  merged = default_config().to_dict()
  if config is not None:
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    unknown = sorted(set(given) - set(merged))
    if unknown:
      raise ValueError(f"unknown scorer config fields {unknown}; known: {sorted(merged)}")
    merged.update(given)
  if merged["bank"] not in BANK_MODES:
    raise ValueError(f"config.bank={merged['bank']!r}; expected one of {BANK_MODES}")
  if merged["normalization"] not in NORMALIZATIONS:
    raise ValueError(f"config.normalization={merged['normalization']!r}; expected one of {NORMALIZATIONS}")
  if merged["layers"] is not None:
    merged["layers"] = [int(i) for i in merged["layers"]]
  return merged


def _vectors(embeddings: np.ndarray, records: Sequence[records_lib.ClipRecord], config: dict[str, Any],
             what: str) -> np.ndarray:
  """[clips, dim] float64 vectors the kNN sees (layers concatenated, each L2-normalised in float64)."""
  x = np.asarray(embeddings)
  if x.shape[0] != len(records):
    raise ValueError(f"{what}: {x.shape[0]} embeddings for {len(records)} records")
  if not np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  x = features.concat_layers(x.astype(np.float64), config["layers"], normalize_layers=config["normalize_layers"])
  bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
  if bad.size:
    raise ValueError(f"{what}: non-finite embeddings for {len(bad)} clips: "
                     f"{', '.join(records[i].path for i in bad[:5])}")
  return x


group_by_section = records_lib.group_by_section


def _knn_scores(queries, bank, k, config, exclude=None) -> knn.KnnResult:
  return knn.cosine_knn(
      queries, bank, k, bank_is_normalized=True, exclude=exclude, dtype=np.float64,
      query_chunk=config["query_chunk"], bank_chunk=config["bank_chunk"],
  )


def _bank_parts(state: SectionState, mode: str) -> list[np.ndarray]:
  """Row indices of the bank's searchable parts: one part, or source and target for domain_min."""
  rows = np.arange(len(state.bank))
  if mode == "joint":
    return [rows]
  target = rows[state.bank_domain == 1]
  if mode == "target_only":
    return [target]
  return [rows[state.bank_domain == 0], target]


def _search(state: SectionState, queries: np.ndarray, config: dict[str, Any], exclude_clip=None):
  """Raw scores [n] and nearest bank rows [n] over the bank parts of `config['bank']`.

  exclude_clip: optional [n] training-clip index per query, removed from the search together
  with all synthetic entries (leave-one-out on original clips).
  """
  best_score = np.full(len(queries), np.inf)
  best_row = np.zeros(len(queries), np.int64)
  for rows in _bank_parts(state, config["bank"]):
    if exclude_clip is not None:
      rows = rows[~state.bank_synthetic[rows]]
    k = config["k"]
    exclude = None
    if exclude_clip is not None:
      position = {int(c): j for j, c in enumerate(state.bank_clip[rows])}
      exclude = np.array([position.get(int(c), -1) for c in exclude_clip], np.int64)
    available = len(rows) - (1 if exclude is not None else 0)
    if available < 1:
      continue
    result = _knn_scores(queries, state.bank[rows], min(k, available), config, exclude)
    score = result.score
    better = score < best_score
    best_score[better] = score[better]
    best_row[better] = rows[result.nearest[better]]
  if not np.all(np.isfinite(best_score)):
    raise ValueError("a bank part is empty: too few training clips for this bank mode")
  return best_score, best_row


def fit(
    embeddings: np.ndarray,
    records: Sequence[records_lib.ClipRecord],
    config: Mapping[str, Any] | None = None,
) -> Scorer:
  """Fits a scorer on one model's normal training embeddings.

  Args:
    embeddings: [clips, layers, dim] (or [clips, dim]) pooled embeddings of `records`.
    records: the training clips; each needs domain "source" or "target". Anomalous clips and
      supplementary recordings (kind != "machine") are rejected.
    config: overrides of `default_config()`.

  Returns:
    A `Scorer` with one `SectionState` per (machine, section) of `records`.
  """
  config = _as_config(config)
  records = list(records)
  x = _vectors(embeddings, records, config, "fit")
  for r in records:
    if r.domain not in (records_lib.SOURCE, records_lib.TARGET):
      raise ValueError(f"{r.path}: training clip needs domain source/target, found {r.domain!r}")
    if r.label == records_lib.ANOMALY or r.kind != records_lib.KIND_MACHINE:
      raise ValueError(f"{r.path}: only normal machine clips can be training clips (label={r.label}, kind={r.kind})")
  sections = {}
  for key, idx in group_by_section(records).items():
    is_target = np.array([records[i].domain == records_lib.TARGET for i in idx])
    src_idx, tgt_idx = idx[~is_target], idx[is_target]
    synthetic = np.zeros((0, x.shape[1]), np.float64)
    if config["smote"] and len(tgt_idx):
      synthetic = smote.oversample_target(
          x[src_idx], x[tgt_idx], k_neighbors=config["smote_k_neighbors"], seed=config["smote_seed"]
      )
    synthetic_parent = np.zeros(0, np.int64)
    if len(synthetic):
      synthetic_parent = tgt_idx[knn.cosine_knn(synthetic, x[tgt_idx], 1).nearest]
    bank = knn.l2_normalize(np.concatenate([x[src_idx], x[tgt_idx], synthetic])).astype(np.float32)
    n_syn = len(synthetic)
    state = SectionState(
        bank=bank,
        bank_clip=np.concatenate([src_idx, tgt_idx, synthetic_parent]).astype(np.int64),
        bank_domain=np.concatenate([np.zeros(len(src_idx)), np.ones(len(tgt_idx) + n_syn)]).astype(np.int8),
        bank_synthetic=np.concatenate([np.zeros(len(idx), bool), np.ones(n_syn, bool)]),
        train_clip=idx,
        train_scores=np.zeros(len(idx)),
        mean=0.0, std=1.0, threshold=0.0,
    )
    if config["bank"] != "joint" and (len(tgt_idx) == 0 or (config["bank"] == "domain_min" and len(src_idx) == 0)):
      raise ValueError(f"{key}: bank mode {config['bank']!r} needs source and target training clips; "
                       f"found {len(src_idx)} source, {len(tgt_idx)} target")
    raw_loo, _ = _search(state, x[idx], config, exclude_clip=idx)
    if config["normalization"] == "loo":
      state.mean = float(raw_loo.mean())
      state.std = float(max(raw_loo.std(), STD_FLOOR))
    state.train_scores = (raw_loo - state.mean) / state.std
    state.threshold = threshold_lib.fit_threshold(
        state.train_scores, method=config["threshold_method"], quantile=config["threshold_quantile"]
    )
    sections[key] = state
  return Scorer(config=config, train_paths=[r.path for r in records], sections=sections)


def score(scorer: Scorer, embeddings: np.ndarray, records: Sequence[records_lib.ClipRecord]) -> Scores:
  """Scores clips with a fitted scorer.

  Args:
    scorer: from `fit` or `Scorer.load`.
    embeddings: [clips, layers, dim] (or [clips, dim]) embeddings of `records`, same model and
      layers as at fit time.
    records: the clips; only machine and section are read.

  Returns:
    `Scores` in the order of `records`.
  """
  config = scorer.config
  records = list(records)
  x = _vectors(embeddings, records, config, "score")
  n = len(records)
  raw, normalized = np.zeros(n), np.zeros(n)
  nearest = np.zeros(n, np.int64)
  for key, idx in group_by_section(records).items():
    if key not in scorer.sections:
      raise ValueError(f"{records[idx[0]].path}: no fitted state for machine {key[0]!r} section {key[1]!r}; "
                       f"fitted: {sorted(scorer.sections)}")
    state = scorer.sections[key]
    if x.shape[1] != state.bank.shape[1]:
      raise ValueError(f"score: embedding dim {x.shape[1]} != fitted dim {state.bank.shape[1]} for {key}")
    raw_s, rows = _search(state, x[idx], config)
    raw[idx] = raw_s
    normalized[idx] = (raw_s - state.mean) / state.std
    nearest[idx] = state.bank_clip[rows]
  decisions = threshold_lib.decide_by_section(records, normalized, thresholds(scorer))
  return Scores(raw=raw, normalized=normalized, nearest_train_clip=nearest, decisions=decisions)


def thresholds(scorer: Scorer) -> dict[SectionKey, float]:
  """The model's own per-section decision thresholds (on its normalised scale)."""
  return {key: state.threshold for key, state in scorer.sections.items()}


def train_clip_distances(scorer: Scorer, embeddings: np.ndarray, records: Sequence[records_lib.ClipRecord]
                         ) -> dict[SectionKey, np.ndarray]:
  """{section: [n_clips_of_section, n_train_clips_of_section] normalised cosine distances
  `(d - mean) / std`} from each clip to every original training clip of its section (columns in the order of
  `state.train_clip`; SMOTE entries left out), computed in float64 like `score`."""
  x = _vectors(embeddings, list(records), scorer.config, "score")
  out = {}
  for key, idx in group_by_section(records).items():
    if key not in scorer.sections:
      raise ValueError(f"{records[idx[0]].path}: no fitted state for machine {key[0]!r} section {key[1]!r}")
    state = scorer.sections[key]
    original = np.flatnonzero(~state.bank_synthetic)
    row_of_clip = dict(zip(state.bank_clip[original].tolist(), original.tolist()))
    bank = state.bank[[row_of_clip[int(c)] for c in state.train_clip]].astype(np.float64)
    distance = 1.0 - knn.l2_normalize(x[idx]) @ bank.T
    out[key] = (np.clip(distance, 0.0, 2.0) - state.mean) / state.std
  return out
