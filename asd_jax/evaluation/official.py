"""Official DCASE Task 2 evaluation of anomaly scores under every year's protocol, from records, files or a dataset.

Three entry points, each returning one `metrics.Evaluation` and never stopping at a section that cannot be
evaluated (only normal or only anomalous clips, a domain without normal clips, clips without labels): that section
is a blank row (`SectionMetrics.problem`), the summaries are over the others, and `Evaluation.warnings` names each
one left out, once. Bad input (unreadable or mismatched files, non-finite scores) is still an error naming it.

  evaluate_records(records, scores, decisions)   in memory, from `ClipRecord`s (the pipeline's test clips)
  evaluate_dirs(scores_dir, ground_truth_dir)    a submission folder against an official ground truth
  evaluate_dataset(scores_dir, dataset_root)     a submission folder against the labels and domains in a dataset's
                                                 file names (a development set of any year, 2020-2026)

`protocol` (a year, "2022-2026" or an `asd_jax.evaluation.protocol.Protocol`) picks the year's rules; None finds
them from the clips' names and layout (`protocol.detect`). `official_score_objective` is a fast objective for the
fusion weight search; `unevaluable_sections` finds, from labels and domains alone, the sections an evaluation will
leave blank (a check before any compute). See `asd_jax.evaluation.metrics` for the rules and their sources.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from asd_jax.data import records as records_lib
from asd_jax.evaluation import files, metrics
from asd_jax.evaluation import protocol as protocol_lib
from asd_jax.evaluation.metrics import Evaluation
from asd_jax.evaluation.protocol import Protocol

Year = int | str | Protocol | None
_LABELS = {records_lib.NORMAL: 0, records_lib.ANOMALY: 1}
_DOMAINS = {records_lib.SOURCE: 0, records_lib.TARGET: 1}


def _section_groups(records: Sequence[records_lib.ClipRecord], protocol: Protocol):
  """{(machine, section): (indices [n], labels [n], domains [n], problem)}, sorted; labels/domains are 0/1, or -1
  where unknown, and then `problem` says how many clips lack them (the section cannot be evaluated)."""
  out = {}
  for key, idx in records_lib.group_by_section(records).items():
    paths = [records[i].path for i in idx]
    if len(set(paths)) != len(paths):
      dup = sorted({p for p in paths if paths.count(p) > 1})
      raise ValueError(f"{protocol.unit_name(*key)}: duplicate clips {dup[:5]}")
    labels = np.array([_LABELS.get(records[i].label, -1) for i in idx], np.int64)
    domains = np.array([_DOMAINS.get(records[i].domain, -1) for i in idx], np.int64)
    problems = []
    if (labels < 0).any():
      problems.append(f"{int(np.sum(labels < 0))} of {labels.size} test clips have no label (normal/anomaly), e.g. "
                      f"{records[idx[np.argmax(labels < 0)]].path}")
    if protocol.has_domains and (domains < 0).any():
      problems.append(f"{int(np.sum(domains < 0))} of {domains.size} test clips have no domain (source/target), "
                      f"e.g. {records[idx[np.argmax(domains < 0)]].path}")
    out[key] = (idx, labels, domains, "; ".join(problems) or None)
  return out


def _check_scores(n: int, scores: np.ndarray, decisions: np.ndarray | None, names: Callable[[int], str]):
  scores = np.asarray(scores, np.float64)
  if scores.shape != (n,):
    raise ValueError(f"{n} records but scores of shape {scores.shape}")
  if decisions is not None:
    decisions = np.asarray(decisions)
    if decisions.shape != (n,):
      raise ValueError(f"{n} records but decisions of shape {decisions.shape}")
  bad = np.nonzero(~np.isfinite(scores))[0]
  if bad.size:
    raise ValueError(f"non-finite scores for clips {[names(i) for i in bad[:5]]}")
  return scores, decisions


def _evaluate_groups(groups, scores: np.ndarray, decisions: np.ndarray | None, protocol: Protocol) -> Evaluation:
  """Section metrics of each group (blank where it has a problem) and their summary."""
  sections, pooled_labels, pooled_scores = [], [], []
  for (machine, section), (idx, labels, domains, problem) in groups.items():
    if problem:
      sections.append(metrics.blank_section(machine, section, len(idx), problem))
      continue
    row = metrics.section_metrics(machine, section, labels, domains if protocol.has_domains else None, scores[idx],
                                  None if decisions is None else decisions[idx], protocol=protocol)
    sections.append(row)
    if row.evaluated:
      pooled_labels.append(labels)
      pooled_scores.append(scores[idx])
  ci95 = None
  if protocol is Protocol.DCASE2022 and pooled_labels:  # the 2023-2025 evaluators' CI; earlier years had none
    ci95 = metrics.official_score_ci95(np.concatenate(pooled_labels), np.concatenate(pooled_scores))
  return metrics.summarize(sections, protocol=protocol, ci95=ci95)


def evaluate_records(
    records: Sequence[records_lib.ClipRecord],
    scores: np.ndarray,
    decisions: np.ndarray | None = None,
    *,
    protocol: Year = None,
) -> Evaluation:
  """Official metrics of test clips; a section with clips of unknown label (or, with domains, unknown domain) is a
  blank row, as is one its protocol cannot evaluate.

  Args:
    records: [n] test clips of any number of machine types and sections.
    scores: [n] anomaly scores (higher = more anomalous).
    decisions: optional [n] 0/1 decisions (for precision, recall, F1).
    protocol: the year's rules (see the module docstring); None: from the records' paths.
  """
  records = list(records)
  scores, decisions = _check_scores(len(records), scores, decisions, lambda i: records[i].path)
  protocol = protocol_lib.resolve(protocol, (r.path for r in records))
  return _evaluate_groups(_section_groups(records, protocol), scores, decisions, protocol)


def _truth_protocol(truths: Sequence[files.SectionTruth], year: Year) -> Protocol:
  if year is None and any(t.per_domain_files for t in truths):
    return Protocol.DCASE2021
  return protocol_lib.resolve(year, (c for t in truths for c in t.clips))


def evaluate_dirs(scores_dir: str, ground_truth_dir: str, *, decisions: bool = True, protocol: Year = None
                  ) -> Evaluation:
  """Official metrics of a submission folder against a ground truth: a folder, or 2020's `eval_data_list.csv`
  (`files` documents them; None `protocol`: 2021 for the 2021 evaluator's per-domain ground truth, else from the
  clip names)."""
  truths = files.read_ground_truth(ground_truth_dir)
  protocol = _truth_protocol(truths, protocol)
  groups, score_parts, decision_parts, offset = {}, [], [], 0
  for truth in truths:
    y_score, y_decision = files.read_submission_section(scores_dir, truth, decisions=decisions, protocol=protocol)
    n = len(truth.clips)
    groups[(truth.machine, truth.section)] = (np.arange(offset, offset + n), truth.labels, truth.domains, None)
    score_parts.append(y_score)
    decision_parts.append(y_decision)
    offset += n
  scores = np.concatenate(score_parts).astype(np.float64)
  all_decisions = None if any(d is None for d in decision_parts) else np.concatenate(decision_parts)
  return _evaluate_groups(groups, scores, all_decisions, protocol)


def dataset_test_records(root: str) -> list[records_lib.ClipRecord]:
  """The test clips of a DCASE dataset folder of any year (machine folders at or below `root`; 2021's
  `source_test/` and `target_test/` included), from their names only: label and domain where the names carry
  them (a development set), None where not (an evaluation set).

  Raises:
    asd_jax.data.layout.DatasetError: listing every unparseable name; for a folder without machine folders or
      without test clips.
  """
  # Imported here: the data layer brings scipy.signal (through audio.wav), seconds of import that reading a
  # ground-truth folder does not need.
  from asd_jax.data import corpus_sources, layout  # pylint: disable=import-outside-toplevel
  records = [r for r in corpus_sources.scan_tree(root) if records_lib.is_test_clip(r)]
  if not records:
    raise layout.DatasetError(root, [f"{root}: no test clips (no .wav in any machine folder's test/, source_test/ "
                                     "or target_test/)"])
  return sorted(records, key=lambda r: r.path)


def evaluate_dataset(scores_dir: str, dataset_root: str, *, decisions: bool = True, protocol: Year = None
                     ) -> Evaluation:
  """Official metrics of a submission folder against the labels and domains in the names of a dataset's test
  clips (`dataset_test_records`): a development set of any year evaluates without a ground-truth folder. Every
  section's score file must list exactly its test clips; a section whose names hide the labels is a blank row."""
  records = dataset_test_records(dataset_root)
  protocol = protocol_lib.resolve(protocol, (r.path for r in records))
  n = len(records)
  scores, read_decisions = np.zeros(n), np.zeros(n, np.int64)
  any_decisions = False
  for (machine, section), idx in records_lib.group_by_section(records).items():
    clips = [os.path.basename(records[i].path) for i in idx]
    y_score, y_decision = files.read_scores(scores_dir, machine, section, clips, decisions=decisions,
                                            protocol=protocol)
    scores[idx] = y_score
    if y_decision is not None:
      read_decisions[idx] = y_decision
      any_decisions = True
  return evaluate_records(records, scores, read_decisions if any_decisions else None, protocol=protocol)


def unevaluable_sections(records: Sequence[records_lib.ClipRecord], *, protocol: Year = None
                         ) -> dict[tuple[str, str], str]:
  """{(machine, section): problem} of the sections `evaluate_records` will leave blank, found from the records'
  labels and domains alone (scores play no part): the check to run before any compute.
  `metrics.warning_line(protocol, machine, section, problem)` words each as the evaluation's warning."""
  records = list(records)
  protocol = protocol_lib.resolve(protocol, (r.path for r in records))
  out = {}
  for (machine, section), (idx, labels, domains, problem) in _section_groups(records, protocol).items():
    if problem is None:
      problem = metrics.section_metrics(machine, section, labels, domains if protocol.has_domains else None,
                                        np.zeros(len(idx)), protocol=protocol).problem
    if problem:
      out[(machine, section)] = problem
  return out


def official_score_objective(records: Sequence[records_lib.ClipRecord], *, protocol: Year = None
                             ) -> Callable[[np.ndarray], float]:
  """`f(scores [n]) -> Evaluation.objective` (the official score; 2020: the mean of AUC and pAUC) over the sections
  of fixed records that can be evaluated, e.g. for the fusion grid search.

  The grouping and the checks are done once; each call computes the protocol's AUCs per section with
  `metrics.fast_auc` (scikit-learn's algorithm without its per-call overhead).

  Raises:
    ValueError: when no section can be evaluated (each one's problem listed).
  """
  records = list(records)
  protocol = protocol_lib.resolve(protocol, (r.path for r in records))
  n = len(records)
  left_out = unevaluable_sections(records, protocol=protocol)
  parts = []
  for (machine, section), (idx, labels, domains, _) in _section_groups(records, protocol).items():
    if (machine, section) in left_out:
      continue
    if protocol is Protocol.DCASE2020:
      masks = [(np.ones_like(labels, bool), None), (np.ones_like(labels, bool), metrics.MAX_FPR)]
    elif protocol is Protocol.DCASE2021:
      masks = [(domains == d, fpr) for _, d in metrics.DOMAINS for fpr in (None, metrics.MAX_FPR)]
    else:
      masks = [((domains == d) | (labels == 1), None) for _, d in metrics.DOMAINS]
      masks.append((np.ones_like(labels, bool), metrics.MAX_FPR))
    parts.append((machine, idx, labels, masks))
  if not parts:
    raise ValueError("no section can be evaluated:\n  " + "\n  ".join(
        f"{protocol.unit_name(*key)}: {problem}" for key, problem in left_out.items()))

  def objective(scores: np.ndarray) -> float:
    scores = np.asarray(scores, np.float64)
    if scores.shape != (n,):
      raise ValueError(f"objective built for {n} clips, got scores of shape {scores.shape}")
    if protocol is Protocol.DCASE2020:  # mean over machine types of the mean over IDs of (AUC + pAUC) / 2
      per_machine: dict[str, list[float]] = {}
      for machine, idx, labels, masks in parts:
        per_machine.setdefault(machine, []).append(
            np.mean([metrics.fast_auc(labels, scores[idx], fpr) for _, fpr in masks]))
      return float(np.mean([np.mean(v) for v in per_machine.values()]))
    values = []
    for _, idx, labels, masks in parts:
      s = scores[idx]
      values += [metrics.fast_auc(labels[keep], s[keep], fpr) for keep, fpr in masks]
    return metrics.hmean_clipped(values)

  return objective


def format_sections(evaluation: Evaluation) -> str:
  """Per-section rows as a markdown table (percent; blank values "-"), in the columns of the year's evaluator
  (2021: one row per section and domain), with a last column saying why a row is not evaluated."""
  fmt = metrics.formatter(True)
  p = evaluation.protocol
  has_prf = any(s.f1_source is not None or s.f1_target is not None for s in evaluation.sections)
  if p is Protocol.DCASE2020:
    header, rows = ["machine", "ID", "AUC", "pAUC"], [
        ([s.machine, f"id_{s.section}"], [s.auc_all, s.pauc], s) for s in evaluation.sections]
  elif p is Protocol.DCASE2021:
    header = ["machine", "section", "domain", "AUC", "pAUC"] + (["precision", "recall", "F1"] if has_prf else [])
    rows = []
    for s in evaluation.sections:
      for d in ("source", "target"):
        values = [getattr(s, f"auc_{d}"), getattr(s, f"pauc_{d}")]
        if has_prf:
          values += [getattr(s, f"{m}_{d}") for m in ("precision", "recall", "f1")]
        rows.append(([s.machine, s.section, d], values, s))
  else:
    header = ["machine", "section", "AUC (source)", "AUC (target)", "pAUC"]
    if has_prf:
      header += ["precision (s)", "precision (t)", "recall (s)", "recall (t)", "F1 (s)", "F1 (t)"]
    rows = []
    for s in evaluation.sections:
      values = [s.auc_source, s.auc_target, s.pauc]
      if has_prf:
        values += [s.precision_source, s.precision_target, s.recall_source, s.recall_target, s.f1_source, s.f1_target]
      rows.append(([s.machine, s.section], values, s))
  lines = ["| " + " | ".join(header + ["not evaluated"]) + " |", "|" + "---|" * (len(header) + 1)]
  for names, values, s in rows:
    lines.append("| " + " | ".join(names + [fmt(v) for v in values] + [s.problem or ""]) + " |")
  return "\n".join(lines)
