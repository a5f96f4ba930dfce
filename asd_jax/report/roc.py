"""ROC curves of one machine type and section: AUC (source), AUC (target) and the pAUC region, per scorer.

The three panels are the three numbers of the official evaluator (`asd_jax.evaluation.metrics`): AUC (source)
over the source-domain normal clips and all anomalous clips, AUC (target) likewise with the target-domain
normal clips, and the pAUC over all clips, drawn on its region FPR <= 0.1. The curves come from scikit-learn's
`roc_curve`; the values in the legends come from `metrics.section_metrics`, the function behind Table 1 and
Table 3, so they are the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as sk_metrics

from asd_jax.evaluation import metrics
from asd_jax.report import style

PANELS = (("source", "AUC (source)\nsource normal + all anomalous"),
          ("target", "AUC (target)\ntarget normal + all anomalous"),
          ("all", f"pAUC region (FPR \u2264 {metrics.MAX_FPR:g})\nall clips"))


@dataclasses.dataclass(frozen=True)
class RocSet:
  """One scorer's ROC curves in one section.

  Attributes:
    name: legend name (a model or a fused system).
    curves: {"source" | "target" | "all": (fpr [m], tpr [m])}, from scikit-learn's `roc_curve`.
    values: {"source": AUC (source), "target": AUC (target), "all": pAUC}, from `metrics.section_metrics`.
    section: the full `metrics.SectionMetrics` the values come from.
  """

  name: str
  curves: dict[str, tuple[np.ndarray, np.ndarray]]
  values: dict[str, float]
  section: metrics.SectionMetrics


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(fpr [m], tpr [m]) of scikit-learn's ROC curve (every threshold kept, for a faithful staircase)."""
  fpr, tpr, _ = sk_metrics.roc_curve(labels, scores, drop_intermediate=False)
  return fpr, tpr


def roc_set(name: str, machine: str, section: str, labels: np.ndarray, domains: np.ndarray,
            scores: np.ndarray) -> RocSet:
  """The curves and official values of one scorer in one section.

  Args:
    labels: [n] 0 normal / 1 anomalous; domains: [n] 0 source / 1 target; scores: [n] anomaly scores.
  """
  labels, domains, scores = np.asarray(labels), np.asarray(domains), np.asarray(scores, np.float64)
  section_metrics = metrics.section_metrics(machine, section, labels, domains, scores)
  curves = {"all": roc_points(labels, scores)}
  for name_, d in (("source", 0), ("target", 1)):
    keep = (domains == d) | (labels == 1)
    curves[name_] = roc_points(labels[keep], scores[keep])
  values = {"source": section_metrics.auc_source, "target": section_metrics.auc_target, "all": section_metrics.pauc}
  return RocSet(name=name, curves=curves, values=values, section=section_metrics)


def percent(value: float) -> str:
  """A metric as the tables print it (`pipeline.format_table1`): percent, two decimals."""
  return f"{100.0 * value:.2f}"


@style.styled
def roc_figure(title: str, rows: Mapping[str, Sequence[RocSet]]) -> Figure:
  """One row of three panels (AUC source, AUC target, pAUC region) per group of scorers.

  Each row has one legend, right of it: every scorer with its AUC (source), AUC (target) and pAUC in percent.

  Args:
    title: e.g. "fan section 00".
    rows: {row label (e.g. "models", "fused systems"): the scorers drawn in that row}; empty rows are skipped.
  """
  rows = {k: list(v) for k, v in rows.items() if v}
  if not rows:
    raise ValueError(f"roc_figure({title!r}): no scorers to draw")
  fig = style.figure(10.0, 2.7 * len(rows))
  axes = np.asarray(fig.subplots(len(rows), len(PANELS), squeeze=False))
  for r, (row_label, sets) in enumerate(rows.items()):
    handles = []
    for c, (panel, panel_title) in enumerate(PANELS):
      ax = axes[r, c]
      limit = metrics.MAX_FPR if panel == "all" else 1.0
      ax.plot([0, limit], [0, limit], color=style.GREY, linestyle=":", linewidth=1.0)  # chance
      for i, s in enumerate(sets):
        fpr, tpr = s.curves[panel]
        colour, dash = style.line_style(i)
        (line,) = ax.plot(fpr, tpr, color=colour, linestyle=dash)
        if c == 0:
          handles.append(line)
      ax.set_xlim(0.0, limit)
      ax.set_ylim(0.0, 1.0)
      ax.set_xlabel("false positive rate")
      ax.set_ylabel(f"{row_label}\ntrue positive rate" if c == 0 else "true positive rate")
      if r == 0:
        ax.set_title(panel_title)
    labels = [f"{s.name}  {' / '.join(percent(s.values[p]) for p, _ in PANELS)}" for s in sets]
    axes[r, -1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.03, 1.0),
                       title="AUC (s) / AUC (t) / pAUC, %", title_fontsize=7.5)
  fig.suptitle(f"{title}: ROC curves (dotted: chance)")
  return fig
