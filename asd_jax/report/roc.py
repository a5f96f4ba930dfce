"""ROC curves of one machine type and section, per scorer: the curves behind the numbers of the year's official
evaluator (`asd_jax.evaluation.metrics`, `protocol`).

Panels per protocol (`PANELS`): DCASE 2022-2026 AUC (source) over the source-domain normal clips and all anomalous
clips, AUC (target) likewise with the target-domain normal clips, and the pAUC over all clips, drawn on its region
FPR <= 0.1; DCASE 2021 the AUC of each domain's own clips (its `source_test/` and `target_test/` folders); DCASE 2020
the AUC over all clips of the machine ID and its pAUC region. The curves come from scikit-learn's `roc_curve`; the
values in the legends (`VALUES`) come from `metrics.section_metrics`, the function behind Table 1 and Table 3, so
they are the same numbers. A section that cannot be evaluated has no `RocSet` (`roc_set` raises `NotEvaluated`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as sk_metrics

from asd_jax.evaluation import metrics
from asd_jax.evaluation.protocol import Protocol
from asd_jax.report import style


@dataclasses.dataclass(frozen=True)
class Panel:
  """One panel: its key in `RocSet.curves`, title, which clips its curve is over, and its FPR range."""

  key: str
  title: str
  clips: str  # "source+anomalous", "target+anomalous", "source", "target" or "all"
  max_fpr: float = 1.0


_PAUC_REGION = f"pAUC region (FPR \u2264 {metrics.MAX_FPR:g})"
PANELS: dict[Protocol, tuple[Panel, ...]] = {
    Protocol.DCASE2022: (Panel("source", "AUC (source)\nsource normal + all anomalous", "source+anomalous"),
                         Panel("target", "AUC (target)\ntarget normal + all anomalous", "target+anomalous"),
                         Panel("all", f"{_PAUC_REGION}\nall clips", "all", metrics.MAX_FPR)),
    Protocol.DCASE2021: (Panel("source", "AUC (source)\nsource-domain clips", "source"),
                         Panel("target", "AUC (target)\ntarget-domain clips", "target")),
    Protocol.DCASE2020: (Panel("all", "AUC\nall clips of the machine ID", "all"),
                         Panel("pauc", f"{_PAUC_REGION}\nall clips of the machine ID", "all", metrics.MAX_FPR)),
}
# The legend's numbers per protocol: (short name, `SectionMetrics` field), what the tables are made of.
VALUES: dict[Protocol, tuple[tuple[str, str], ...]] = {
    Protocol.DCASE2022: (("AUC (s)", "auc_source"), ("AUC (t)", "auc_target"), ("pAUC", "pauc")),
    Protocol.DCASE2021: (("AUC (s)", "auc_source"), ("AUC (t)", "auc_target"), ("pAUC (s)", "pauc_source"),
                         ("pAUC (t)", "pauc_target")),
    Protocol.DCASE2020: (("AUC", "auc_all"), ("pAUC", "pauc")),
}


class NotEvaluated(ValueError):
  """A section the protocol cannot evaluate (unknown labels or domains, one class only, ...); says why."""


@dataclasses.dataclass(frozen=True)
class RocSet:
  """One scorer's ROC curves in one section.

  Attributes:
    name: legend name (a model or a fused system).
    curves: {panel key: (fpr [m], tpr [m])}, from scikit-learn's `roc_curve` (`PANELS` of the protocol).
    values: {`SectionMetrics` field: value} of the protocol's `VALUES`, from `metrics.section_metrics`.
    section: the full `metrics.SectionMetrics` the values come from.
    protocol: the year's rules.
  """

  name: str
  curves: dict[str, tuple[np.ndarray, np.ndarray]]
  values: dict[str, float]
  section: metrics.SectionMetrics
  protocol: Protocol = Protocol.DCASE2022


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(fpr [m], tpr [m]) of scikit-learn's ROC curve (every threshold kept, for a faithful staircase)."""
  fpr, tpr, _ = sk_metrics.roc_curve(labels, scores, drop_intermediate=False)
  return fpr, tpr


def _clips(kind: str, labels: np.ndarray, domains: np.ndarray) -> np.ndarray:
  if kind == "all":
    return np.ones(labels.shape, bool)
  domain = int(kind.split("+")[0] == "target")
  return (domains == domain) | (labels == 1) if kind.endswith("+anomalous") else domains == domain


def roc_set(name: str, machine: str, section: str, labels: np.ndarray, domains: np.ndarray, scores: np.ndarray,
            protocol: Protocol = Protocol.DCASE2022) -> RocSet:
  """The curves and official values of one scorer in one section under `protocol`.

  Args:
    labels: [n] 0 normal / 1 anomalous / -1 unknown; domains: [n] 0 source / 1 target / -1 unknown (not read under
      DCASE 2020); scores: [n] anomaly scores.

  Raises:
    NotEvaluated: naming why, for a section the protocol cannot evaluate (as the tables leave it blank).
  """
  labels, domains, scores = np.asarray(labels), np.asarray(domains), np.asarray(scores, np.float64)
  if (labels < 0).any():
    raise NotEvaluated(f"{int(np.sum(labels < 0))} of {labels.size} test clips have no label (normal/anomaly)")
  if protocol.has_domains and (domains < 0).any():
    raise NotEvaluated(f"{int(np.sum(domains < 0))} of {domains.size} test clips have no domain (source/target)")
  section_metrics = metrics.section_metrics(machine, section, labels, domains if protocol.has_domains else None,
                                            scores, protocol=protocol)
  if section_metrics.problem:
    raise NotEvaluated(section_metrics.problem)
  curves = {}
  for panel in PANELS[protocol]:
    keep = _clips(panel.clips, labels, domains)
    curves[panel.key] = roc_points(labels[keep], scores[keep])
  values = {field: getattr(section_metrics, field) for _, field in VALUES[protocol]}
  return RocSet(name=name, curves=curves, values=values, section=section_metrics, protocol=protocol)


def percent(value: float | None) -> str:
  """A metric as the tables print it (`pipeline.results`): percent, two decimals; None (blank) is "-"."""
  return metrics.formatter(True)(value)


@style.styled
def roc_figure(title: str, rows: Mapping[str, Sequence[RocSet]]) -> Figure:
  """One row of panels (`PANELS` of the scorers' protocol; 2022+: AUC source, AUC target, pAUC region) per group
  of scorers.

  Each row has one legend, right of it: every scorer with its `VALUES` in percent.

  Args:
    title: e.g. "fan section 00".
    rows: {row label (e.g. "models", "fused systems"): the scorers drawn in that row}; empty rows are skipped.
  """
  rows = {k: list(v) for k, v in rows.items() if v}
  if not rows:
    raise ValueError(f"roc_figure({title!r}): no scorers to draw")
  protocol = next(iter(rows.values()))[0].protocol
  panels, values = PANELS[protocol], VALUES[protocol]
  fig = style.figure(3.3 * len(panels) + 0.1, 2.7 * len(rows))
  axes = np.asarray(fig.subplots(len(rows), len(panels), squeeze=False))
  for r, (row_label, sets) in enumerate(rows.items()):
    handles = []
    for c, panel in enumerate(panels):
      ax = axes[r, c]
      limit = panel.max_fpr
      ax.plot([0, limit], [0, limit], color=style.GREY, linestyle=":", linewidth=1.0)  # chance
      for i, s in enumerate(sets):
        fpr, tpr = s.curves[panel.key]
        colour, dash = style.line_style(i)
        (line,) = ax.plot(fpr, tpr, color=colour, linestyle=dash)
        if c == 0:
          handles.append(line)
      ax.set_xlim(0.0, limit)
      ax.set_ylim(0.0, 1.0)
      ax.set_xlabel("false positive rate")
      ax.set_ylabel(f"{row_label}\ntrue positive rate" if c == 0 else "true positive rate")
      if r == 0:
        ax.set_title(panel.title)
    labels = [f"{s.name}  {' / '.join(percent(s.values[field]) for _, field in values)}" for s in sets]
    axes[r, -1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.03, 1.0),
                       title=" / ".join(name for name, _ in values) + ", %", title_fontsize=7.5)
  fig.suptitle(f"{title}: ROC curves (dotted: chance)")
  return fig
