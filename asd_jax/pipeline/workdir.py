"""The pipeline's workdir: every path in it, and the writers and readers of its files (the one place that knows
them; the stages, the cache and the report go through it). NumPy and JSON only: the report reads a workdir
without JAX.

  DIR/clip_hashes.json                  content hash of every clip, keyed by path, with its stat signature
                                        (`asd_jax.data.digest`)
  DIR/pretrain/                         the pre-training run when the config has one (`asd_jax.pretraining`;
                                        its exported encoder in pretrain/encoder/)
  DIR/models/<key>/                     per fine-tuned or frozen model:
      checkpoints/, config.json, label_space.json, metrics.jsonl   a fine-tuning run (`asd_jax.finetuning`);
                                                                   a frozen model has only its config.json
      embeddings.npz, embeddings_records.json                      every clip's embeddings (`embedding.store`)
      pipeline_stamp.json                                          what the above were made from (`cache`):
        {"trained_step", "train_clips", "embedded": {"step", "clips", "all_layers", "batch_size", "config"}}
  DIR/scores/<key>_scorer.npz           the model's fitted scorer (`scoring.scorer.Scorer.load`)
  DIR/scores/<key>_test.npz             test clips, in one order: raw [n] kNN cosine distance, normalized [n],
                                        decisions [n] (model's own thresholds), nearest_train_clip [n] (index
                                        into the scorer's train_paths; SMOTE entries map to their parent clip),
                                        paths [n]
  DIR/scores/<system>_fused.npz         per system (and "grid"): scores [n] fused, decisions [n],
                                        nearest_train_clip [n] (fused nearest), paths [n], thresholds [sections]
                                        with threshold_machines [sections], threshold_sections [sections]
  DIR/submissions/<system>/             anomaly_score_<machine>_section_<ss>_test.csv, decision_result_*.csv
                                        (`evaluation.files`)
  DIR/tables.md                         Tables 1 and 3 as printed
  DIR/results.json                      {"dataset", "labelled", "protocol", "warnings", "actions": {key:
                                         {"train", "embed"}},
                                         "models": {key: {"name", "kind", "reference", "layers", "sources",
                                                          "evaluation"}},
                                         "systems": {name: {"weights", "reduced", "note", "submission",
                                                            "evaluation"}}, "detector"}
                                        ("labelled": some section could be evaluated; "protocol": the year's rules,
                                        `evaluation.protocol`; "evaluation": `Evaluation.to_json_dict()`, its
                                        sections that could not be evaluated holding nulls, or null when none could)
  DIR/provenance.json                   the config, package versions, times of the last invocation, and what
                                        every encoder of every model started from (`asd_jax.provenance`)
  DIR/detector/                         the exported detector (`asd_jax.detector`)
  DIR/report/                           the report (`asd_jax.report`)

Every file a later run or reader uses is written atomically. A reader that finds a file missing or unreadable
raises `WorkdirError` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from asd_jax import atomic
from asd_jax import provenance as provenance_lib
from asd_jax.data import digest
from asd_jax.data import records as records_lib
from asd_jax.embedding import store
from asd_jax.scoring import fusion
from asd_jax.scoring import scorer as scorer_lib

MODELS = "models"
SCORES = "scores"
SUBMISSIONS = "submissions"
DETECTOR = "detector"
PRETRAIN = "pretrain"
REPORT = "report"
HASH_CACHE = digest.CACHE_FILE
TABLES = "tables.md"
RESULTS = "results.json"
PROVENANCE = "provenance.json"
STAMP = "pipeline_stamp.json"
MODEL_CONFIG = "config.json"  # a model folder's config: its fine-tuning run's (`training.loop.CONFIG`), or frozen
TRAINING_LOG = "metrics.jsonl"  # a training run's log (`training.train_log.FILE`), wherever one ran
# Folders below DIR that hold no training log of their own (searched for metrics.jsonl otherwise).
NO_LOGS = (REPORT, "checkpoints", DETECTOR, SUBMISSIONS, "tensorboard")

SectionKey = tuple[str, str]


class WorkdirError(ValueError):
  """A workdir that lacks a file a reader needs, or holds one it cannot read."""


# --- Paths ----------------------------------------------------------------------------------------------------


def model_dir(workdir: str, key: str) -> str:
  return os.path.join(workdir, MODELS, key)


def embeddings_path(workdir: str, key: str) -> str:
  return os.path.join(model_dir(workdir, key), store.ARRAYS)


def scorer_path(workdir: str, key: str) -> str:
  return os.path.join(workdir, SCORES, f"{key}_scorer.npz")


def test_scores_path(workdir: str, key: str) -> str:
  return os.path.join(workdir, SCORES, f"{key}_test.npz")


def fused_path(workdir: str, system: str) -> str:
  return os.path.join(workdir, SCORES, f"{system}_fused.npz")


def submission_dir(workdir: str, system: str) -> str:
  return os.path.join(workdir, SUBMISSIONS, system)


def path(workdir: str, name: str) -> str:
  """`DIR/<name>` of the names above (HASH_CACHE, TABLES, RESULTS, DETECTOR, PRETRAIN, REPORT, ...)."""
  return os.path.join(workdir, name)


# --- Writers --------------------------------------------------------------------------------------------------


def write_scores(workdir: str, key: str, scorer: scorer_lib.Scorer, scores: scorer_lib.Scores,
                 test_records: Sequence[records_lib.ClipRecord]) -> None:
  """A model's fitted scorer and its scores of the test clips (`scores/<key>_{scorer,test}.npz`)."""
  os.makedirs(os.path.join(workdir, SCORES), exist_ok=True)
  scorer.save(scorer_path(workdir, key))
  atomic.save_npz(test_scores_path(workdir, key), raw=scores.raw, normalized=scores.normalized,
                  decisions=scores.decisions, nearest_train_clip=scores.nearest_train_clip,
                  paths=np.array([r.path for r in test_records]))


def write_fused(workdir: str, system: str, fused: fusion.FusedScores,
                test_records: Sequence[records_lib.ClipRecord]) -> None:
  """A system's fused scores of the test clips and its per-section thresholds (`scores/<system>_fused.npz`)."""
  sections = sorted(fused.thresholds)
  os.makedirs(os.path.join(workdir, SCORES), exist_ok=True)
  atomic.save_npz(fused_path(workdir, system), scores=fused.scores, decisions=fused.decisions,
                  nearest_train_clip=fused.nearest_train_clip, paths=np.array([r.path for r in test_records]),
                  threshold_machines=np.array([m for m, _ in sections]),
                  threshold_sections=np.array([s for _, s in sections]),
                  thresholds=np.array([fused.thresholds[k] for k in sections], np.float64))


def write_tables(workdir: str, tables: str) -> None:
  atomic.write_text(path(workdir, TABLES), tables + "\n")


def write_results(workdir: str, results: dict[str, Any]) -> None:
  atomic.write_json(path(workdir, RESULTS), results)


def write_provenance(workdir: str, **provenance: Any) -> None:
  """`DIR/provenance.json` (`asd_jax.provenance.write`: config, started, wall_s, stage_s, earlier, finished,
  weights)."""
  provenance_lib.write(path(workdir, PROVENANCE), **provenance)


def earlier_invocations(workdir: str) -> list[dict[str, Any]]:
  """The invocations `DIR/provenance.json` records (`asd_jax.provenance.earlier_invocations`)."""
  return provenance_lib.earlier_invocations(path(workdir, PROVENANCE))


def write_model_config(model_dir_: str, config: Any) -> None:
  """A frozen model's `config.json` (a fine-tuning run writes its own)."""
  atomic.write_text(os.path.join(model_dir_, MODEL_CONFIG), config.to_json_best_effort(indent=2))


def read_stamp(model_dir_: str) -> dict[str, Any]:
  """The model folder's `pipeline_stamp.json` ({} without one)."""
  file = os.path.join(model_dir_, STAMP)
  return read_json(file) if os.path.isfile(file) else {}


def write_stamp(model_dir_: str, **updates: Any) -> None:
  """Updates the model folder's `pipeline_stamp.json` (written after what it describes)."""
  atomic.write_json(os.path.join(model_dir_, STAMP), {**read_stamp(model_dir_), **updates})


# --- Readers --------------------------------------------------------------------------------------------------


def read_json(file: str) -> Any:
  if not os.path.isfile(file):
    raise WorkdirError(f"{file}: missing (is this a pipeline workdir? `python -m asd_jax.pipeline` writes it)")
  with open(file) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise WorkdirError(f"{file}: not valid JSON ({e})") from e


def read_jsonl(file: str) -> list[dict[str, Any]]:
  """The rows of a JSON-lines file (a training log; read here without JAX)."""
  rows = []
  with open(file) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise WorkdirError(f"{file}:{number}: not a JSON line ({e})") from e
  return rows


def read_results(workdir: str) -> dict[str, Any]:
  return read_json(path(workdir, RESULTS))


def read_provenance(workdir: str) -> dict[str, Any] | None:
  """`DIR/provenance.json`, None without one."""
  try:
    return provenance_lib.read(path(workdir, PROVENANCE))
  except ValueError as e:
    raise WorkdirError(str(e)) from e


def read_tables(workdir: str) -> str:
  file = path(workdir, TABLES)
  if not os.path.isfile(file):
    raise WorkdirError(f"{file}: missing (the pipeline writes it with {RESULTS})")
  with open(file, encoding="utf-8") as f:
    return f.read()


def _npz(file: str, what: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
  """The arrays `names` of one of the pipeline's `.npz` files; WorkdirError naming it when missing or short."""
  if not os.path.isfile(file):
    raise WorkdirError(f"{file}: missing; the pipeline writes one per {what}")
  try:
    with np.load(file, allow_pickle=False) as data:
      lacking = [n for n in names if n not in data.files]
      if lacking:
        raise WorkdirError(f"{file}: lacks {lacking} (written by an older version? re-run the pipeline)")
      return {n: data[n] for n in names}
  except (OSError, ValueError) as e:
    if isinstance(e, WorkdirError):
      raise
    raise WorkdirError(f"{file}: not readable as .npz ({e})") from e


def read_test_scores(workdir: str, key: str) -> tuple[np.ndarray, list[str]]:
  """`(normalized [n] float64, paths [n])` of model `key`'s test scores."""
  data = _npz(test_scores_path(workdir, key), "model", ("normalized", "paths"))
  return np.asarray(data["normalized"], np.float64), [str(p) for p in data["paths"]]


@dataclasses.dataclass(frozen=True)
class SavedFused:
  """A system's saved fused scores of the test clips."""

  scores: np.ndarray  # [n] float64
  decisions: np.ndarray  # [n] 0/1
  paths: list[str]
  thresholds: dict[SectionKey, float]


def read_fused(workdir: str, system: str) -> SavedFused:
  data = _npz(fused_path(workdir, system), "fused system",
              ("scores", "decisions", "paths", "thresholds", "threshold_machines", "threshold_sections"))
  thresholds = {(str(m), str(s)): float(t) for m, s, t in zip(data["threshold_machines"], data["threshold_sections"],
                                                                data["thresholds"])}
  return SavedFused(scores=np.asarray(data["scores"], np.float64), decisions=np.asarray(data["decisions"], np.int64),
                    paths=[str(p) for p in data["paths"]], thresholds=thresholds)


def read_scorer(workdir: str, key: str) -> scorer_lib.Scorer:
  file = scorer_path(workdir, key)
  if not os.path.isfile(file):
    raise WorkdirError(f"{file}: missing; the pipeline writes one per model")
  return scorer_lib.Scorer.load(file)


def _record(entry: Mapping[str, Any]) -> records_lib.ClipRecord:
  entry = dict(entry)
  entry["attributes"] = tuple(tuple(a) for a in entry.get("attributes", ()))
  return records_lib.ClipRecord(**entry)


def clip_records(workdir: str) -> dict[str, records_lib.ClipRecord]:
  """{clip path: ClipRecord} of every clip in the workdir (from the embedded models' embeddings_records.json)."""
  out: dict[str, records_lib.ClipRecord] = {}
  models = os.path.join(workdir, MODELS)
  for key in sorted(os.listdir(models)) if os.path.isdir(models) else []:
    file = store.records_path(embeddings_path(workdir, key))
    if os.path.isfile(file):
      for entry in read_json(file)["records"]:
        out.setdefault(entry["path"], _record(entry))
  return out


def has_embeddings(workdir: str, key: str) -> bool:
  return os.path.isfile(embeddings_path(workdir, key))


def read_embeddings(workdir: str, key: str, records: Sequence[records_lib.ClipRecord]) -> dict[str, np.ndarray]:
  """Model `key`'s embeddings of `records`, rows in their order (`embedding.store.read`)."""
  file = embeddings_path(workdir, key)
  try:
    return store.read(file, records)
  except (OSError, ValueError, KeyError) as e:
    raise WorkdirError(f"{file}: {e}") from e


def read_embedding_batch_size(workdir: str, key: str) -> int:
  """The batch size model `key`'s embeddings were made with (the detector replays it)."""
  return read_json(store.records_path(embeddings_path(workdir, key)))["batch_size"]


def training_logs(workdir: str) -> list[tuple[str, list[dict[str, Any]]]]:
  """`(folder relative to DIR, rows)` of every training log below DIR (skipping `NO_LOGS`), in walk order."""
  logs = []
  for folder, dirs, files in os.walk(workdir):
    dirs[:] = sorted(d for d in dirs if d not in NO_LOGS)
    if TRAINING_LOG in files:
      logs.append((os.path.relpath(folder, workdir), read_jsonl(os.path.join(folder, TRAINING_LOG))))
  return logs
