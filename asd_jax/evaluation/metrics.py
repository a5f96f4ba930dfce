"""The DCASE 2023-2025 Task 2 metrics, as the official evaluator computes them.

Per machine type and section (labels: 0 normal, 1 anomalous; domains: 0 source, 1 target):
  AUC (source): ROC AUC over the source-domain normal clips and all anomalous clips of the section.
  AUC (target): likewise with the target-domain normal clips.
  pAUC: scikit-learn's standardised partial AUC (`roc_auc_score(max_fpr=0.1)`) over all clips.
  precision / recall / F1 per domain: over the clips of that domain (normal and anomalous), from
    the 0/1 decisions, each denominator floored at machine epsilon.
Official score: the harmonic mean of every section's AUC (source), AUC (target) and pAUC (each
pAUC counted once), every value first raised to at least machine epsilon.
Official score CI95: the mean of the jackknife 95 % half-widths of the AUC and the pAUC over all test
clips of all sections pooled (`official_score_ci95`; the official script's formula, see `jackknife`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats
from sklearn import metrics as sk_metrics

MAX_FPR = 0.1
EPS = sys.float_info.epsilon


@dataclasses.dataclass(frozen=True)
class SectionMetrics:
  """Metrics of one machine type and section. P/R/F1 are None without decisions."""

  machine: str
  section: str
  n_clips: int
  auc_all: float
  auc_source: float
  auc_target: float
  pauc: float
  precision_source: float | None = None
  precision_target: float | None = None
  recall_source: float | None = None
  recall_target: float | None = None
  f1_source: float | None = None
  f1_target: float | None = None


def _check_binary(values: np.ndarray, what: str, where: str) -> np.ndarray:
  values = np.asarray(values)
  bad = ~np.isin(values, (0, 1))
  if bad.any():
    raise ValueError(f"{where}: {what} must be 0 or 1, found {np.unique(values[bad])[:5].tolist()}")
  return values.astype(np.int64)


def _auc(y_true: np.ndarray, y_score: np.ndarray, where: str, **kwargs) -> float:
  if len(np.unique(y_true)) < 2:
    raise ValueError(f"{where}: AUC needs both normal and anomalous clips, found labels {np.unique(y_true).tolist()}")
  return float(sk_metrics.roc_auc_score(y_true, y_score, **kwargs))


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
    domains: np.ndarray,
    scores: np.ndarray,
    decisions: np.ndarray | None = None,
) -> SectionMetrics:
  """Official metrics of one section.

  Args:
    labels: [n] 0 normal / 1 anomalous.
    domains: [n] 0 source / 1 target.
    scores: [n] anomaly scores (higher = more anomalous).
    decisions: optional [n] 0/1 decisions.
  """
  where = f"{machine} section {section}"
  labels = _check_binary(labels, "labels", where)
  domains = _check_binary(domains, "domains", where)
  scores = np.asarray(scores, np.float64)
  if not (labels.shape == domains.shape == scores.shape) or labels.ndim != 1:
    raise ValueError(f"{where}: labels {labels.shape}, domains {domains.shape}, scores {scores.shape} differ")
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"{where}: non-finite anomaly scores")
  values = dict(
      auc_all=_auc(labels, scores, where),
      pauc=_auc(labels, scores, where, max_fpr=MAX_FPR),
  )
  for name, d in (("source", 0), ("target", 1)):
    keep = (domains == d) | (labels == 1)
    values[f"auc_{name}"] = _auc(labels[keep], scores[keep], f"{where} ({name} normal + all anomalous)")
  if decisions is not None:
    decisions = _check_binary(decisions, "decisions", where)
    if decisions.shape != labels.shape:
      raise ValueError(f"{where}: {decisions.shape[0]} decisions for {labels.shape[0]} clips")
    for name, d in (("source", 0), ("target", 1)):
      in_domain = domains == d
      p, r, f = _precision_recall_f1(labels[in_domain], decisions[in_domain])
      values.update({f"precision_{name}": p, f"recall_{name}": r, f"f1_{name}": f})
  return SectionMetrics(machine=machine, section=section, n_clips=int(labels.size), **values)


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


@dataclasses.dataclass(frozen=True)
class MachineSummary:
  """One row of the report's Table 1: section means and the harmonic mean of all values."""

  machine: str
  auc_source: float  # arithmetic mean over the machine's sections
  auc_target: float
  pauc: float
  hmean: float  # harmonic mean of all AUC (source), AUC (target) and pAUC values of the machine


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Everything the official evaluator reports, for a list of sections."""

  sections: list[SectionMetrics]
  machines: list[MachineSummary]
  official_score: float
  hmean_auc_source: float
  hmean_auc_target: float
  hmean_pauc: float
  arithmetic_mean: float  # mean of all AUC (source), AUC (target), pAUC values
  official_score_ci95: float | None = None  # see `official_score_ci95`; None when not computed

  def to_json_dict(self) -> dict:
    return dict(
        official_score=self.official_score,
        hmean_auc_source=self.hmean_auc_source,
        hmean_auc_target=self.hmean_auc_target,
        hmean_pauc=self.hmean_pauc,
        arithmetic_mean=self.arithmetic_mean,
        official_score_ci95=self.official_score_ci95,
        sections=[dataclasses.asdict(s) for s in self.sections],
        machines=[dataclasses.asdict(m) for m in self.machines],
    )


def summarize(sections: Sequence[SectionMetrics], *, ci95: float | None = None) -> Evaluation:
  """Official score and per-machine summaries from section metrics; `ci95` from `official_score_ci95`."""
  sections = list(sections)
  if not sections:
    raise ValueError("no sections to evaluate")
  machines = []
  for machine in dict.fromkeys(s.machine for s in sections):
    own = [s for s in sections if s.machine == machine]
    src, tgt, pauc = ([getattr(s, f) for s in own] for f in ("auc_source", "auc_target", "pauc"))
    machines.append(MachineSummary(
        machine=machine, auc_source=float(np.mean(src)), auc_target=float(np.mean(tgt)),
        pauc=float(np.mean(pauc)), hmean=hmean_clipped(src + tgt + pauc),
    ))
  src = [s.auc_source for s in sections]
  tgt = [s.auc_target for s in sections]
  pauc = [s.pauc for s in sections]
  return Evaluation(
      sections=sections,
      machines=machines,
      official_score=hmean_clipped(src + tgt + pauc),
      hmean_auc_source=hmean_clipped(src),
      hmean_auc_target=hmean_clipped(tgt),
      hmean_pauc=hmean_clipped(pauc),
      arithmetic_mean=float(np.mean(src + tgt + pauc)),
      official_score_ci95=ci95,
  )


def format_table(evaluation: Evaluation, *, percent: bool = True) -> str:
  """The report's Table 1 as a markdown table: per machine AUC_s, AUC_t, pAUC, hmean; overall."""
  scale = 100.0 if percent else 1.0
  fmt = (lambda v: f"{v * scale:.2f}") if percent else (lambda v: f"{v:.4f}")
  lines = ["| machine | AUC (source) | AUC (target) | pAUC | hmean |", "|---|---|---|---|---|"]
  for m in evaluation.machines:
    lines.append(f"| {m.machine} | {fmt(m.auc_source)} | {fmt(m.auc_target)} | {fmt(m.pauc)} | {fmt(m.hmean)} |")
  e = evaluation
  lines.append(f"| hmean (all) | {fmt(e.hmean_auc_source)} | {fmt(e.hmean_auc_target)} | {fmt(e.hmean_pauc)} "
               f"| {fmt(e.official_score)} |")
  return "\n".join(lines)
