"""DCASE Task 2 metrics of every year's protocol (`asd_jax.evaluation.protocol`), as the official code computes them.

Labels: 0 normal, 1 anomalous; domains: 0 source, 1 target. pAUC is scikit-learn's standardised partial AUC,
`roc_auc_score(max_fpr=0.1)`, in every year. Harmonic means first raise every value to at least machine epsilon.

DCASE 2020 (y-kawagu/dcase2020_task2_evaluator, evaluator.py, `output_result`; the baseline's 01_test.py computes
  the same): per machine ID, AUC (`auc_all`) and pAUC over all its test clips; per machine type the arithmetic mean
  over its IDs ("Average"). No domains, no decisions. The evaluator gives no single figure and the challenge ranked
  submissions against each other per machine type (one team reports ranking 4th with the highest mean of AUC and
  pAUC over all machine types, papertalk.org/papertalks/14256), so one system has no official score.
  `arithmetic_mean`, that mean over machine types of (AUC + pAUC) / 2, is given instead, and the fusion weight
  search maximises it.
DCASE 2021 (y-kawagu/dcase2021_task2_evaluator, dcase2021_task2_evaluator.py, `output_result`; the baseline
  dcase2021_task2_baseline_ae, 01_test.py, the same): per section and domain, AUC and pAUC over that domain's test
  clips only (the `source_test/` or `target_test/` folder: its normal and its anomalous clips; `auc_source`,
  `pauc_source`, ...), precision/recall/F1 over the same clips; per machine type and over everything the arithmetic
  and harmonic means of each column over all section x domain rows. Official score (the task description, arXiv
  2106.04492): the harmonic mean of all those AUCs and pAUCs together.
DCASE 2022-2026 (nttcslab/dcase2023_task2_evaluator, dcase2023_task2_evaluator.py, `output_result`; the 2024
  evaluator and the 2022 baseline dcase2022_task2_baseline_ae, 01_test.py, compute the same; 2025 and 2026 keep it):
  per section, AUC (source) over the source-domain normal clips and all anomalous clips of the section, AUC
  (target) likewise, pAUC over all clips; precision/recall/F1 per domain over that domain's clips, from the 0/1
  decisions, each denominator floored at machine epsilon. Official score: the harmonic mean of every section's AUC
  (source), AUC (target) and pAUC (each pAUC once). Official score CI95: the mean of the jackknife 95 % half-widths
  of the AUC and the pAUC over all test clips of all sections pooled (`official_score_ci95`; see `jackknife`).

Blank rows. A section (2020: machine ID) whose values cannot all be computed - only normal or only anomalous clips,
no normal clips of a domain, clips without a label or a domain - is still a row: what can be computed is filled,
the rest is None, and `problem` says why. Such a row is in no summary: every mean and score is over the evaluated
rows, `Evaluation.n_evaluated` of `n_sections` says how many, and `Evaluation.warnings` holds one line naming each
row left out. The official evaluators stop with an error instead; they were never given such sets.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats
from sklearn import metrics as sk_metrics

from asd_jax.evaluation.protocol import Protocol

MAX_FPR = 0.1  # every year's evaluator: MAX_FPR = 0.1
EPS = sys.float_info.epsilon  # the evaluators' floor: numpy.maximum(..., sys.float_info.epsilon)
DOMAINS = (("source", 0), ("target", 1))


@dataclasses.dataclass(frozen=True)
class SectionMetrics:
  """Metrics of one machine type and section (2020: machine ID). A value is None where the protocol has no such
  value, where it cannot be computed (then `problem` says why), and for P/R/F1 without decisions.

  auc_all: AUC over all clips (2020: the year's AUC). auc_source / auc_target: 2021 over that domain's clips only;
  2022+ over that domain's normal clips and all anomalous clips. pauc: over all clips (2020, 2022+);
  pauc_source / pauc_target: 2021 only.
  """

  machine: str
  section: str
  n_clips: int
  auc_all: float | None
  auc_source: float | None
  auc_target: float | None
  pauc: float | None
  precision_source: float | None = None
  precision_target: float | None = None
  recall_source: float | None = None
  recall_target: float | None = None
  f1_source: float | None = None
  f1_target: float | None = None
  pauc_source: float | None = None
  pauc_target: float | None = None
  problem: str | None = None  # why the row is not evaluated; None when it is

  @property
  def evaluated(self) -> bool:
    return self.problem is None


def blank_section(machine: str, section: str, n_clips: int, problem: str) -> SectionMetrics:
  """A row with no values, e.g. for a section whose clips have no labels."""
  return SectionMetrics(machine=machine, section=section, n_clips=n_clips, auc_all=None, auc_source=None,
                        auc_target=None, pauc=None, problem=problem)


def _check_binary(values: np.ndarray, what: str, where: str) -> np.ndarray:
  values = np.asarray(values)
  bad = ~np.isin(values, (0, 1))
  if bad.any():
    raise ValueError(f"{where}: {what} must be 0 or 1, found {np.unique(values[bad])[:5].tolist()}")
  return values.astype(np.int64)


def _auc(y_true: np.ndarray, y_score: np.ndarray, max_fpr: float | None = None) -> float | None:
  """sklearn's (partial) ROC AUC, or None when either class is missing."""
  if len(np.unique(y_true)) < 2:
    return None
  return float(sk_metrics.roc_auc_score(y_true, y_score, max_fpr=max_fpr))


def _one_class(labels: np.ndarray) -> str | None:
  """Why `labels` give no AUC ("only normal clips (2)"), or None when both classes are there."""
  n_normal, n_anomalous = int(np.sum(labels == 0)), int(np.sum(labels == 1))
  if n_normal and n_anomalous:
    return None
  if not n_normal and not n_anomalous:
    return "no test clips"
  return f"only normal clips ({n_normal})" if n_normal else f"only anomalous clips ({n_anomalous})"


def _precision_recall_f1(y_true: np.ndarray, decisions: np.ndarray) -> tuple[float, float, float]:
  tp = float(np.sum((y_true == 1) & (decisions == 1)))
  fp = float(np.sum((y_true == 0) & (decisions == 1)))
  fn = float(np.sum((y_true == 1) & (decisions == 0)))
  precision = tp / max(tp + fp, EPS)
  recall = tp / max(tp + fn, EPS)
  f1 = 2.0 * precision * recall / max(precision + recall, EPS)
  return precision, recall, f1


def section_metrics(
    machine: str,
    section: str,
    labels: np.ndarray,
    domains: np.ndarray | None,
    scores: np.ndarray,
    decisions: np.ndarray | None = None,
    *,
    protocol: Protocol = Protocol.DCASE2022,
) -> SectionMetrics:
  """The metrics of one section (2020: machine ID) under `protocol`; see the module docstring.

  Args:
    labels: [n] 0 normal / 1 anomalous.
    domains: [n] 0 source / 1 target (not read, and may be None, under DCASE 2020).
    scores: [n] anomaly scores (higher = more anomalous), finite.
    decisions: optional [n] 0/1 decisions (precision, recall, F1; not part of 2020).

  Returns:
    Every value that can be computed; a row missing a value its protocol needs has `problem` set.

  Raises:
    ValueError: naming the section, for labels, domains or decisions other than 0/1, arrays of different lengths
      and non-finite scores (bad input, unlike a section that cannot be evaluated).
  """
  where = protocol.unit_name(machine, section)
  labels = _check_binary(labels, "labels", where)
  scores = np.asarray(scores, np.float64)
  if protocol.has_domains or domains is not None:
    domains = _check_binary(domains, "domains", where)
  else:
    domains = np.zeros_like(labels)
  if not (labels.shape == domains.shape == scores.shape) or labels.ndim != 1:
    raise ValueError(f"{where}: labels {labels.shape}, domains {domains.shape}, scores {scores.shape} differ")
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"{where}: non-finite anomaly scores")
  if decisions is not None:
    decisions = _check_binary(decisions, "decisions", where)
    if decisions.shape != labels.shape:
      raise ValueError(f"{where}: {decisions.shape[0]} decisions for {labels.shape[0]} clips")
  values = dict(auc_all=_auc(labels, scores), auc_source=None, auc_target=None, pauc=None)
  problems = []
  if protocol in (Protocol.DCASE2020, Protocol.DCASE2022):
    values["pauc"] = _auc(labels, scores, MAX_FPR)
    if values["pauc"] is None:
      problems.append(f"{_one_class(labels)}: AUC and pAUC need normal and anomalous clips")
  if protocol is Protocol.DCASE2021:
    for name, d in DOMAINS:
      in_domain = domains == d
      values[f"auc_{name}"] = _auc(labels[in_domain], scores[in_domain])
      values[f"pauc_{name}"] = _auc(labels[in_domain], scores[in_domain], MAX_FPR)
      if values[f"auc_{name}"] is None:  # the year's AUC and pAUC need both classes within the domain
        problems.append(f"{name} domain: {_one_class(labels[in_domain])}")
  elif protocol is Protocol.DCASE2022:
    for name, d in DOMAINS:
      keep = (domains == d) | (labels == 1)
      values[f"auc_{name}"] = _auc(labels[keep], scores[keep])
      if values[f"auc_{name}"] is None and values["pauc"] is not None:  # both classes, but no normal clip of d
        problems.append(f"no {name}-domain normal clips: AUC ({name}) needs them")
  if decisions is not None and protocol.has_domains:
    for name, d in DOMAINS:
      in_domain = domains == d
      if in_domain.any():
        p, r, f = _precision_recall_f1(labels[in_domain], decisions[in_domain])
        values.update({f"precision_{name}": p, f"recall_{name}": r, f"f1_{name}": f})
  return SectionMetrics(machine=machine, section=section, n_clips=int(labels.size),
                        problem="; ".join(problems) or None, **values)


def _roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """ROC points (fpr, tpr) from (0, 0), one per distinct score, highest score first."""
  order = np.argsort(-scores, kind="mergesort")
  scores, labels = scores[order], labels[order]
  last_of_value = np.r_[np.flatnonzero(np.diff(scores)), labels.size - 1]
  tps = np.cumsum(labels)[last_of_value]
  fps = last_of_value + 1 - tps
  return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def fast_auc(labels: np.ndarray, scores: np.ndarray, max_fpr: float | None = None) -> float:
  """`sklearn.metrics.roc_auc_score(labels, scores, max_fpr=max_fpr)` without its input checks.

  Same algorithm (ties share a ROC point; the partial area up to `max_fpr` is McClish-
  standardised), about 100x faster on a few hundred clips: the fusion weight search calls it
  thousands of times. labels: [n] 0/1 with both present; scores: [n] finite.
  """
  fpr, tpr = _roc_curve(np.asarray(labels), np.asarray(scores, np.float64))
  if max_fpr is None or max_fpr == 1:
    return float(np.trapezoid(tpr, fpr))
  stop = np.searchsorted(fpr, max_fpr, "right")
  tpr_at = np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])
  area = np.trapezoid(np.r_[tpr[:stop], tpr_at], np.r_[fpr[:stop], max_fpr])
  min_area, max_area = 0.5 * max_fpr**2, max_fpr
  return float(0.5 * (1 + (area - min_area) / (max_area - min_area)))


def jackknife(statistic: Callable[..., float], *arrays: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
  """Jackknife estimate and confidence half-width of `statistic(*arrays)` over their n rows, as the official
  evaluator computes them (after Mesaros et al., IEEE/ACM TASLP 27(6), 2019, section IV).

  With theta_i the statistic without row i: estimate = mean of the pseudo-values n theta - (n - 1) theta_i;
  half-width = t_{(1 + confidence) / 2, n - 1} * sqrt(sum_i (theta_i - mean theta_i)^2 / (n (n - 1))). The
  official script spreads the leave-one-out values theta_i rather than the pseudo-values, which makes the
  interval n - 1 times narrower than the textbook jackknife; it is kept so that the numbers are the same.

  Args:
    statistic: `(*arrays) -> float`.
    arrays: each `[n, ...]`, the same n >= 2.
  """
  arrays = [np.asarray(a) for a in arrays]
  n = len(arrays[0])
  if n < 2 or any(len(a) != n for a in arrays):
    raise ValueError(f"jackknife needs >= 2 rows in every array, got lengths {[len(a) for a in arrays]}")
  theta = statistic(*arrays)
  theta_loo = np.array([statistic(*(np.delete(a, i, axis=0) for a in arrays)) for i in range(n)])
  estimate = float(np.mean(n * theta - (n - 1) * theta_loo))
  spread = np.sqrt(np.sum((theta_loo - theta_loo.mean()) ** 2) / (n * (n - 1)))
  return estimate, float(abs(scipy.stats.t.ppf((1 - confidence) / 2, n - 1)) * spread)


def official_score_ci95(labels: np.ndarray, scores: np.ndarray) -> float | None:
  """The official evaluator's "official score ci95": the mean of the jackknife 95 % half-widths of the AUC
  and of the pAUC (max FPR 0.1) over all test clips pooled. labels: [n] 0/1; scores: [n] finite.

  None when either class has fewer than 2 clips: leaving out its only clip leaves no AUC to compute.
  """
  labels = _check_binary(labels, "labels", "pooled test clips")
  scores = np.asarray(scores, np.float64)
  if labels.shape != scores.shape or labels.ndim != 1:
    raise ValueError(f"official score CI: labels {labels.shape} and scores {scores.shape} differ")
  if min(np.sum(labels == 0), np.sum(labels == 1)) < 2:
    return None
  _, auc_ci = jackknife(fast_auc, labels, scores)
  _, pauc_ci = jackknife(lambda y, s: fast_auc(y, s, MAX_FPR), labels, scores)
  return float(np.mean([auc_ci, pauc_ci]))


def hmean_clipped(values: Sequence[float]) -> float:
  """Harmonic mean after raising every value to at least machine epsilon (the official rule)."""
  return float(scipy.stats.hmean(np.maximum(np.asarray(values, np.float64), EPS)))


def _mean(values: Sequence[float]) -> float | None:
  return float(np.mean(values)) if len(values) else None


def _hmean(values: Sequence[float]) -> float | None:
  return hmean_clipped(values) if len(values) else None


def _values(sections: Sequence[SectionMetrics], *fields: str) -> list[float]:
  """The named fields of every section, field by field (section order within each field)."""
  return [getattr(s, f) for f in fields for s in sections]


@dataclasses.dataclass(frozen=True)
class MachineSummary:
  """One machine type over its evaluated sections (None where none is evaluated, or the protocol has no such value).

  2020: `auc`, `pauc` (means over its IDs). 2021: `auc`, `pauc` (arithmetic means over its section x domain rows),
  `hmean_auc`, `hmean_pauc` (harmonic means of the same), `hmean` (of all its AUCs and pAUCs: the official score's
  formula on one machine type). 2022+: `auc_source`, `auc_target`, `pauc` (means over its sections), `hmean` (of all
  its AUC (source), AUC (target) and pAUC values: the report's Table 1).
  """

  machine: str
  auc_source: float | None
  auc_target: float | None
  pauc: float | None
  hmean: float | None
  auc: float | None = None
  hmean_auc: float | None = None
  hmean_pauc: float | None = None
  n_sections: int = 0
  n_evaluated: int = 0


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Everything the year's official evaluator reports, over the evaluated sections, plus the rows left out.

  sections: every section (2020: machine ID), evaluated or blank (`SectionMetrics.problem`).
  official_score: 2021: harmonic mean of all AUCs and pAUCs; 2022+: of all AUC (source), AUC (target), pAUC.
    None for 2020 (no official score of one system) and when no section is evaluated.
  arithmetic_mean: 2020: mean over machine types of (AUC + pAUC) / 2; 2021, 2022+: mean of the official score's
    values.
  auc, pauc: 2020: means over machine types of their means; 2021: means over all section x domain rows.
  hmean_auc (2021), hmean_pauc (2021, 2022+), hmean_auc_source / hmean_auc_target (2022+): harmonic means of
    each column over all rows.
  warnings: one line per section left out, naming it and why.
  """

  sections: list[SectionMetrics]
  machines: list[MachineSummary]
  official_score: float | None
  hmean_auc_source: float | None
  hmean_auc_target: float | None
  hmean_pauc: float | None
  arithmetic_mean: float | None
  official_score_ci95: float | None = None  # 2022+ only, see `official_score_ci95`; None when not computed
  protocol: Protocol = Protocol.DCASE2022
  auc: float | None = None
  pauc: float | None = None
  hmean_auc: float | None = None
  warnings: tuple[str, ...] = ()

  @property
  def n_sections(self) -> int:
    return len(self.sections)

  @property
  def n_evaluated(self) -> int:
    return sum(s.evaluated for s in self.sections)

  @property
  def objective(self) -> float | None:
    """What a weight search maximises: the official score, or for 2020 `arithmetic_mean`."""
    return self.official_score if self.protocol.has_official_score else self.arithmetic_mean

  def to_json_dict(self) -> dict:
    return dict(
        protocol=self.protocol.value,
        official_score=self.official_score,
        hmean_auc_source=self.hmean_auc_source,
        hmean_auc_target=self.hmean_auc_target,
        hmean_pauc=self.hmean_pauc,
        hmean_auc=self.hmean_auc,
        arithmetic_mean=self.arithmetic_mean,
        auc=self.auc,
        pauc=self.pauc,
        official_score_ci95=self.official_score_ci95,
        n_sections=self.n_sections,
        n_evaluated=self.n_evaluated,
        warnings=list(self.warnings),
        sections=[dataclasses.asdict(s) for s in self.sections],
        machines=[dataclasses.asdict(m) for m in self.machines],
    )


def _machine_summary(machine: str, own: Sequence[SectionMetrics], protocol: Protocol) -> MachineSummary:
  ev = [s for s in own if s.evaluated]
  counts = dict(n_sections=len(own), n_evaluated=len(ev))
  if protocol is Protocol.DCASE2020:
    return MachineSummary(machine, None, None, _mean(_values(ev, "pauc")), None, auc=_mean(_values(ev, "auc_all")),
                          **counts)
  if protocol is Protocol.DCASE2021:
    aucs, paucs = _values(ev, "auc_source", "auc_target"), _values(ev, "pauc_source", "pauc_target")
    return MachineSummary(machine, None, None, _mean(paucs), _hmean(aucs + paucs), auc=_mean(aucs),
                          hmean_auc=_hmean(aucs), hmean_pauc=_hmean(paucs), **counts)
  return MachineSummary(machine, _mean(_values(ev, "auc_source")), _mean(_values(ev, "auc_target")),
                        _mean(_values(ev, "pauc")), _hmean(_values(ev, "auc_source", "auc_target", "pauc")), **counts)


def warning_line(protocol: Protocol, machine: str, section: str, problem: str) -> str:
  """The one warning of a section left out: `fan section 01: not evaluated: only normal clips (7): ...`."""
  return f"{protocol.unit_name(machine, section)}: not evaluated: {problem}"


def summarize(sections: Sequence[SectionMetrics], *, protocol: Protocol = Protocol.DCASE2022,
              ci95: float | None = None) -> Evaluation:
  """Per-machine summaries and the overall figures of `protocol` over the evaluated sections; one warning per
  section left out. `ci95` from `official_score_ci95` (2022+)."""
  sections = list(sections)
  if not sections:
    raise ValueError("no sections to evaluate")
  machines = [_machine_summary(m, [s for s in sections if s.machine == m], protocol)
              for m in dict.fromkeys(s.machine for s in sections)]
  ev = [s for s in sections if s.evaluated]
  warnings = tuple(warning_line(protocol, s.machine, s.section, s.problem) for s in sections if not s.evaluated)
  common = dict(sections=sections, machines=machines, protocol=protocol, warnings=warnings)
  if protocol is Protocol.DCASE2020:
    per_type = [m for m in machines if m.n_evaluated]
    auc, pauc = _mean([m.auc for m in per_type]), _mean([m.pauc for m in per_type])
    return Evaluation(official_score=None, hmean_auc_source=None, hmean_auc_target=None, hmean_pauc=None,
                      arithmetic_mean=None if auc is None else (auc + pauc) / 2, auc=auc, pauc=pauc, **common)
  if protocol is Protocol.DCASE2021:
    aucs, paucs = _values(ev, "auc_source", "auc_target"), _values(ev, "pauc_source", "pauc_target")
    return Evaluation(official_score=_hmean(aucs + paucs), hmean_auc_source=None, hmean_auc_target=None,
                      hmean_pauc=_hmean(paucs), arithmetic_mean=_mean(aucs + paucs), auc=_mean(aucs),
                      pauc=_mean(paucs), hmean_auc=_hmean(aucs), **common)
  src, tgt, pauc = _values(ev, "auc_source"), _values(ev, "auc_target"), _values(ev, "pauc")
  return Evaluation(official_score=_hmean(src + tgt + pauc), hmean_auc_source=_hmean(src),
                    hmean_auc_target=_hmean(tgt), hmean_pauc=_hmean(pauc), arithmetic_mean=_mean(src + tgt + pauc),
                    official_score_ci95=ci95, **common)


def formatter(percent: bool) -> Callable[[float | None], str]:
  """`v -> "84.21"` (percent, 2 decimals) or `"0.8421"`; None (a blank value) -> "-"."""

  def fmt(v: float | None) -> str:
    if v is None:
      return "-"
    return f"{100.0 * v:.2f}" if percent else f"{v:.4f}"
  return fmt


def coverage_line(evaluation: Evaluation) -> str:
  """"All 7 sections evaluated." or which were left out, for under a table."""
  unit = evaluation.protocol.unit + "s"
  if evaluation.n_evaluated == evaluation.n_sections:
    return f"All {evaluation.n_sections} {unit} evaluated."
  left_out = [evaluation.protocol.unit_name(s.machine, s.section) for s in evaluation.sections if not s.evaluated]
  return (f"Summary over {evaluation.n_evaluated} of {evaluation.n_sections} {unit}; left out (they cannot be "
          f"evaluated, see the warnings): {', '.join(left_out)}.")


def format_table(evaluation: Evaluation, *, percent: bool = True) -> str:
  """The per-machine-type table of the year's evaluator as markdown (2022+: the report's Table 1), the overall row
  last, then which sections the summary covers. Blank values print as "-"."""
  fmt = formatter(percent)
  e, p = evaluation, evaluation.protocol
  if p is Protocol.DCASE2020:
    lines = ["| machine | IDs | AUC | pAUC |", "|---|---|---|---|"]
    lines += [f"| {m.machine} | {m.n_evaluated}/{m.n_sections} | {fmt(m.auc)} | {fmt(m.pauc)} |" for m in e.machines]
    lines.append(f"| mean over machine types | | {fmt(e.auc)} | {fmt(e.pauc)} |")
  elif p is Protocol.DCASE2021:
    lines = ["| machine | AUC (a-mean) | pAUC (a-mean) | AUC (h-mean) | pAUC (h-mean) | hmean |", "|---" * 6 + "|"]
    lines += [f"| {m.machine} | {fmt(m.auc)} | {fmt(m.pauc)} | {fmt(m.hmean_auc)} | {fmt(m.hmean_pauc)} "
              f"| {fmt(m.hmean)} |" for m in e.machines]
    lines.append(f"| all | {fmt(e.auc)} | {fmt(e.pauc)} | {fmt(e.hmean_auc)} | {fmt(e.hmean_pauc)} "
                 f"| {fmt(e.official_score)} |")
  else:
    lines = ["| machine | AUC (source) | AUC (target) | pAUC | hmean |", "|---|---|---|---|---|"]
    lines += [f"| {m.machine} | {fmt(m.auc_source)} | {fmt(m.auc_target)} | {fmt(m.pauc)} | {fmt(m.hmean)} |"
              for m in e.machines]
    lines.append(f"| hmean (all) | {fmt(e.hmean_auc_source)} | {fmt(e.hmean_auc_target)} | {fmt(e.hmean_pauc)} "
                 f"| {fmt(e.official_score)} |")
  return "\n".join(lines) + "\n\n" + coverage_line(e)
