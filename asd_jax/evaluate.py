"""Official DCASE 2023-2025 Task 2 evaluation of anomaly scores, from files or from records.

  python -m asd_jax.evaluate --scores DIR --ground_truth DIR [--json FILE] [--nodecisions]

reads a submission folder (`anomaly_score_*` and `decision_result_*` files) and an official
ground-truth folder, prints the per-section metrics and the report's Table 1 (per machine type
AUC (source), AUC (target), pAUC and their harmonic mean; the official score last), and with
`--json` writes `{"official_score": ..., "official_score_ci95": ..., "sections": [{"machine", "section", "auc_source",
"auc_target", "pauc", ...}], "machines": [...]}`. `evaluate_records` does the same in memory from
`ClipRecord`s with domain and label; `official_score_objective` gives a fast objective for
searching fusion weights on the development set. See `asd_jax.evaluation.metrics` for the rules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np
from absl import app, flags

from asd_jax import cli
from asd_jax import fileio
from asd_jax.data import records as records_lib
from asd_jax.evaluation import files, metrics
from asd_jax.evaluation.files import write_ground_truth, write_submission  # noqa: F401  (re-exported)
from asd_jax.evaluation.metrics import Evaluation, format_table  # noqa: F401  (re-exported)


def _section_arrays(records: Sequence[records_lib.ClipRecord]):
  """{(machine, section): (indices [n], labels [n], domains [n])} of labelled test records."""
  groups: dict[tuple[str, str], list[int]] = {}
  for i, r in enumerate(records):
    if r.label not in (records_lib.NORMAL, records_lib.ANOMALY):
      raise ValueError(f"{r.path}: evaluation needs label normal/anomaly, found {r.label!r}")
    if r.domain not in (records_lib.SOURCE, records_lib.TARGET):
      raise ValueError(f"{r.path}: evaluation needs domain source/target, found {r.domain!r}")
    groups.setdefault((r.machine, r.section), []).append(i)
  out = {}
  for key, idx in sorted(groups.items()):
    paths = [records[i].path for i in idx]
    if len(set(paths)) != len(paths):
      dup = sorted({p for p in paths if paths.count(p) > 1})
      raise ValueError(f"{key[0]} section {key[1]}: duplicate clips {dup[:5]}")
    idx = np.asarray(idx)
    labels = np.array([records[i].label == records_lib.ANOMALY for i in idx], np.int64)
    domains = np.array([records[i].domain == records_lib.TARGET for i in idx], np.int64)
    out[key] = (idx, labels, domains)
  return out


def evaluate_records(
    records: Sequence[records_lib.ClipRecord],
    scores: np.ndarray,
    decisions: np.ndarray | None = None,
) -> Evaluation:
  """Official metrics of test clips with known domain and label.

  Args:
    records: [n] labelled test clips of any number of machine types and sections.
    scores: [n] anomaly scores (higher = more anomalous).
    decisions: optional [n] 0/1 decisions (for precision, recall, F1).
  """
  records = list(records)
  scores = np.asarray(scores, np.float64)
  if scores.shape != (len(records),):
    raise ValueError(f"{len(records)} records but scores of shape {scores.shape}")
  if decisions is not None:
    decisions = np.asarray(decisions)
    if decisions.shape != (len(records),):
      raise ValueError(f"{len(records)} records but decisions of shape {decisions.shape}")
  bad = np.nonzero(~np.isfinite(scores))[0]
  if bad.size:
    raise ValueError(f"non-finite scores for clips {[records[i].path for i in bad[:5]]}")
  sections, pooled_labels, pooled_scores = [], [], []
  for (machine, section), (idx, labels, domains) in _section_arrays(records).items():
    sections.append(metrics.section_metrics(
        machine, section, labels, domains, scores[idx], None if decisions is None else decisions[idx]))
    pooled_labels.append(labels)
    pooled_scores.append(scores[idx])
  ci95 = metrics.official_score_ci95(np.concatenate(pooled_labels), np.concatenate(pooled_scores))
  return metrics.summarize(sections, ci95=ci95)


def evaluate_dirs(scores_dir: str, ground_truth_dir: str, *, decisions: bool = True) -> Evaluation:
  """Official metrics of a submission folder against an official ground-truth folder."""
  sections, pooled_labels, pooled_scores = [], [], []
  for truth in files.read_ground_truth(ground_truth_dir):
    y_score, y_decision = files.read_submission_section(scores_dir, truth, decisions=decisions)
    sections.append(metrics.section_metrics(
        truth.machine, truth.section, truth.labels, truth.domains, y_score, y_decision))
    pooled_labels.append(np.asarray(truth.labels))
    pooled_scores.append(np.asarray(y_score, np.float64))
  ci95 = metrics.official_score_ci95(np.concatenate(pooled_labels), np.concatenate(pooled_scores))
  return metrics.summarize(sections, ci95=ci95)


def official_score_objective(records: Sequence[records_lib.ClipRecord]) -> Callable[[np.ndarray], float]:
  """`f(scores [n]) -> official score` for fixed labelled records (e.g. the fusion grid search).

  The grouping by section and the label checks are done once; each call computes 3 AUCs per
  section with `metrics.fast_auc` (scikit-learn's algorithm without its per-call overhead).
  """
  groups = _section_arrays(list(records))
  n = len(records)
  parts = []
  for (machine, section), (idx, labels, domains) in groups.items():
    where = f"{machine} section {section}"
    source = (domains == 0) | (labels == 1)
    target = (domains == 1) | (labels == 1)
    for keep, what in ((source, "source normal + all anomalous"), (target, "target normal + all anomalous")):
      if len(np.unique(labels[keep])) < 2:
        raise ValueError(f"{where} ({what}): AUC needs both normal and anomalous clips")
    parts.append((idx, labels, source, target))

  def objective(scores: np.ndarray) -> float:
    scores = np.asarray(scores, np.float64)
    if scores.shape != (n,):
      raise ValueError(f"objective built for {n} clips, got scores of shape {scores.shape}")
    values = []
    for idx, labels, source, target in parts:
      s = scores[idx]
      values += [metrics.fast_auc(labels[source], s[source]), metrics.fast_auc(labels[target], s[target]),
                 metrics.fast_auc(labels, s, metrics.MAX_FPR)]
    return metrics.hmean_clipped(values)

  return objective


def format_sections(evaluation: Evaluation) -> str:
  """Per-section metrics as a markdown table (percent)."""
  has_prf = evaluation.sections[0].f1_source is not None
  header = ["machine", "section", "AUC (source)", "AUC (target)", "pAUC"]
  if has_prf:
    header += ["precision (s)", "precision (t)", "recall (s)", "recall (t)", "F1 (s)", "F1 (t)"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for s in evaluation.sections:
    values = [s.auc_source, s.auc_target, s.pauc]
    if has_prf:
      values += [s.precision_source, s.precision_target, s.recall_source, s.recall_target, s.f1_source, s.f1_target]
    lines.append("| " + " | ".join([s.machine, s.section] + [f"{100 * v:.2f}" for v in values]) + " |")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """CLI flags, defined only when run as a program so importers can reuse these flag names."""
  flags.DEFINE_string("scores", None, "Folder of anomaly_score_* and decision_result_* CSV files.")
  flags.DEFINE_string("ground_truth", None, "Folder with ground_truth_data/, ground_truth_domain/ "
                      "(and optionally ground_truth_attributes/).")
  flags.DEFINE_string("json", None, "Write the machine-readable result to this file.")
  flags.DEFINE_bool("decisions", True, "Read decision_result_* files (precision, recall, F1).")


def check_writable(path: str) -> None:
  """Raises OSError naming `path` unless a file can be written there (checked before any work is done)."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise IsADirectoryError(f"--json={path}: is a directory")
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--json={path}: folder {folder} does not exist")
  if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
    raise PermissionError(f"--json={path}: not writable")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.scores or not FLAGS.ground_truth:
    raise app.UsageError("--scores and --ground_truth are required")
  if FLAGS.json:
    check_writable(FLAGS.json)
  evaluation = evaluate_dirs(FLAGS.scores, FLAGS.ground_truth, decisions=FLAGS.decisions)
  if FLAGS.json:  # Before the tables: a failed write (a full disk) is one error line, not a traceback under them.
    try:
      fileio.atomic_write_text(FLAGS.json, json.dumps(evaluation.to_json_dict(), indent=2))
    except OSError as e:
      raise OSError(f"--json={FLAGS.json}: cannot write it: {e}") from e
  print(format_sections(evaluation))
  print()
  print(format_table(evaluation))
  ci95 = evaluation.official_score_ci95
  print(f"\nofficial score: {evaluation.official_score:.6f}" +
        ("" if ci95 is None else f" (CI95 +/- {ci95:.6f}, the official jackknife over all clips)"))


if __name__ == "__main__":
  _define_flags()
  cli.run(main)  # app.run; a bad score or ground-truth file, or an unwritable --json, exits with "error: ..."
