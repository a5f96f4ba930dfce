"""Where clips' anomaly scores fall against the section's normal training scores and its decision threshold.

`draw_scores` draws one panel: the normal training clips' (leave-one-out) scores as a grey histogram, the scored
clips as outlined histograms (normal, anomalous, or unlabelled: test clips whose names hide the label, or new
recordings; never counted as normal) with a tick per clip along the bottom (fewer than `MIN_HISTOGRAM` clips:
taller ticks only), and the fitted threshold as a dashed line; clips right of it are flagged anomalous.
`section_figure` puts one row per scorer and one column per domain (the
report); `detect_figure` is one panel for the clips that `detect` scores, which have no labels, and
`write_detect_figures` writes one per section scored (what `detect --plot_dir` draws).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from asd_jax.report import style

NORMAL, ANOMALY, UNKNOWN = 0, 1, -1
MIN_HISTOGRAM = 20  # fewer clips than this are drawn as ticks only: a histogram of 3 clips says nothing
SCORE_LABEL = "anomaly score (normalised)"
_LABELS = {NORMAL: ("normal test clips", style.NORMAL), ANOMALY: ("anomalous test clips", style.ANOMALY),
           UNKNOWN: ("scored recordings", style.BLACK)}
UNLABELLED_TEST = "unlabelled test clips"  # the report's name for test clips of unknown label (`unknown_name`)


def _bins(*arrays: np.ndarray, count: int = 20) -> np.ndarray:
  values = np.concatenate([np.ravel(a) for a in arrays if np.size(a)])
  values = values[np.isfinite(values)]
  if values.size == 0:
    return np.linspace(-1.0, 1.0, count + 1)
  low, high = float(values.min()), float(values.max())
  if high - low < 1e-9:
    low, high = low - 0.5, high + 0.5
  return np.linspace(low, high, count + 1)


def draw_scores(ax: Axes, train_scores: np.ndarray, threshold: float | None, new_scores: np.ndarray,
                new_labels: np.ndarray | None = None, *, title: str = "", xlabel: str = SCORE_LABEL,
                legend: bool = True, unknown_name: str = _LABELS[UNKNOWN][0]) -> None:
  """Draws one score panel on `ax` (density: each group's histogram integrates to 1, so 10 target training
  clips and 1000 source ones are comparable).

  Args:
    train_scores: [m] the normal training clips' scores (the distribution the threshold was fitted on).
    threshold: the decision threshold (score > threshold is anomalous), or None.
    new_scores: [n] the scored clips.
    new_labels: [n] 0 normal / 1 anomalous / -1 unknown, or None (all unknown: new recordings).
    unknown_name: the legend's name of the clips of unknown label.
  """
  train_scores = np.asarray(train_scores, np.float64)
  new_scores = np.asarray(new_scores, np.float64)
  labels = np.full(new_scores.shape, UNKNOWN) if new_labels is None else np.asarray(new_labels)
  if labels.shape != new_scores.shape:
    raise ValueError(f"draw_scores: {new_scores.shape[0]} scores but labels of shape {labels.shape}")
  extra = [] if threshold is None else [np.array([threshold])]
  bins = _bins(train_scores, new_scores, *extra)
  # np.histogram + one `stairs` artist per group (ax.hist draws a patch per bin: several times slower to lay out
  # and render, the same picture).
  if train_scores.size:
    ax.stairs(np.histogram(train_scores, bins=bins, density=True)[0], bins, fill=True, color=style.TRAIN,
              alpha=0.55, label="normal training clips")
  groups = [(value, new_scores[labels == value]) for value in (NORMAL, ANOMALY, UNKNOWN)]
  groups = [(value, chosen) for value, chosen in groups if chosen.size]
  names = {value: unknown_name if value == UNKNOWN else name for value, (name, _) in _LABELS.items()}
  for value, chosen in groups:  # enough clips for a histogram: an outlined one
    if chosen.size >= MIN_HISTOGRAM:
      name, colour = names[value], _LABELS[value][1]
      ax.stairs(np.histogram(chosen, bins=bins, density=True)[0], bins, linewidth=1.6, color=colour, label=name)
  top = max(ax.get_ylim()[1], 1e-3)
  for value, chosen in groups:  # every clip also as a tick (a few new recordings: only ticks, taller)
    name, colour = names[value], _LABELS[value][1]
    few = chosen.size < MIN_HISTOGRAM
    ax.vlines(chosen, -0.07 * top, (0.35 if few else 0.0) * top, color=colour, linewidth=1.4 if few else 0.8,
              label=name if few else None)
  if threshold is not None:
    ax.axvline(threshold, color=style.THRESHOLD, linestyle="--", linewidth=1.2,
               label="decision threshold")
  ax.set_ylim(-0.08 * top, top * 1.05)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("density")
  if title:
    ax.set_title(title)
  if legend:
    ax.legend(loc="best")


@dataclasses.dataclass(frozen=True)
class DomainScores:
  """One panel's data: training scores [m], test scores [n] and their labels [n] (0 normal, 1 anomalous, -1
  unknown)."""

  train_scores: np.ndarray
  test_scores: np.ndarray
  test_labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class ScorerHistograms:
  """One scorer (model or fused system) in one section: its threshold and one `DomainScores` per domain."""

  name: str
  threshold: float | None
  domains: dict[str, DomainScores]  # {"source": ..., "target": ...}


@style.styled
def section_figure(title: str, rows: Sequence[ScorerHistograms]) -> Figure:
  """One row per scorer, one column per domain (source, target; or "all clips" where domains are unknown). Test
  clips of unknown label are drawn as `UNLABELLED_TEST`, apart from the normal ones."""
  rows = list(rows)
  if not rows:
    raise ValueError(f"section_figure({title!r}): no scorers to draw")
  domains = list(rows[0].domains)
  # Fixed margins (inches) instead of constrained layout, which took half the drawing time of a 14 x 2 grid: two
  # title lines above each panel, tick labels and one x label below the last row, the legend and suptitle.
  width, panel_h, top_in, bottom_in = 4.2 * len(domains), 2.0, 0.65, 0.95
  height = panel_h * len(rows) + top_in + bottom_in
  fig = style.figure(width, height, layout=None)
  fig.subplots_adjust(left=0.45 / width, right=1 - 0.15 / width, top=1 - top_in / height, bottom=bottom_in / height,
                      hspace=0.85, wspace=0.12)
  axes = np.asarray(fig.subplots(len(rows), len(domains), squeeze=False))
  for r, row in enumerate(rows):
    for c, domain in enumerate(domains):
      d = row.domains[domain]
      labels = np.asarray(d.test_labels)
      counts = (f"{d.train_scores.size} training, {np.sum(labels == NORMAL)} normal, "
                f"{np.sum(labels == ANOMALY)} anomalous")
      if np.any(labels == UNKNOWN):
        counts += f", {np.sum(labels == UNKNOWN)} unlabelled"
      draw_scores(axes[r, c], d.train_scores, row.threshold, d.test_scores, d.test_labels,
                  title=f"{row.name}, {domain}\n{counts}", legend=False,
                  xlabel=SCORE_LABEL if r == len(rows) - 1 else "", unknown_name=UNLABELLED_TEST)
    low = min(ax.get_xlim()[0] for ax in axes[r])  # one score scale per scorer: the domains side by side
    high = max(ax.get_xlim()[1] for ax in axes[r])
    for ax in axes[r]:
      ax.set_xlim(low, high)
  handles = {}
  for ax in axes.ravel():  # one legend for the figure: every entry once
    for h, n in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(n, h)
  fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles))
  fig.suptitle(title, y=1 - 0.08 / height, va="top")
  for ax in axes.ravel():  # a density's values say little; its shape against the threshold is the point
    ax.set_yticks([])
  for ax in axes[:, 1:].ravel():
    ax.set_ylabel("")
  return fig


@style.styled
def detect_figure(title: str, train_scores: np.ndarray, threshold: float, new_scores: np.ndarray,
                  new_labels: np.ndarray | None = None, *, new_names: Sequence[str] = ()) -> Figure:
  """Where new recordings of one section fall against its normal training scores and threshold.

  Args:
    train_scores: [m] the section's normal training scores (fused with the system's weights).
    threshold: the section's decision threshold.
    new_scores: [n] the recordings' scores; new_labels: [n] 0 / 1 / -1 (unknown), or None.
    new_names: optional [n] names (e.g. file names); with at most 12 recordings the ticks are numbered and the
      legend lists the names.
  """
  fig = style.figure(7.6, 3.0)
  ax = fig.subplots()
  draw_scores(ax, train_scores, threshold, new_scores, new_labels, legend=False,
              title=f"{title}: {np.size(new_scores)} recordings, threshold {threshold:.4g}")
  handles, names = ax.get_legend_handles_labels()
  if new_names and len(new_names) <= 12:  # numbered ticks, the names listed in the legend
    top = ax.get_ylim()[1] / 1.05
    for i, x in enumerate(np.asarray(new_scores, np.float64)):
      ax.annotate(str(i + 1), (x, 0.36 * top), xytext=(0, 2), textcoords="offset points", fontsize=7, ha="center",
                  va="bottom")
    handles += [Patch(visible=False) for _ in new_names]
    names += [f"{i + 1}: {name}" for i, name in enumerate(new_names)]
  ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  return fig


def write_detect_figures(detector: Any, detections: Sequence[Any], out_dir: str) -> list[str]:
  """Per (machine, section) of `detections` (`detector.Detection`s), a PNG of their scores against the section's
  fused normal training scores and threshold, from `detector` (the loaded `detector.Detector` that scored them:
  its stored training scores and thresholds are drawn, nothing is reloaded); returns the paths,
  `out_dir/scores_<machine>_section_<ss>.png`."""
  os.makedirs(out_dir, exist_ok=True)
  by_section: dict[tuple[str, str], list] = {}
  for d in detections:
    by_section.setdefault((d.machine, d.section), []).append(d)
  paths = []
  for (machine, section), chosen in sorted(by_section.items()):
    fig = detect_figure(f"{machine} section {section} ({detector.system})", detector.train_scores[(machine, section)],
                        detector.thresholds[(machine, section)], np.array([d.score for d in chosen]),
                        new_names=[os.path.basename(d.path) for d in chosen])
    paths.append(style.save_png(fig, os.path.join(out_dir, f"scores_{machine}_section_{section}.png")))
  return paths
