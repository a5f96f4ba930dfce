"""A 2-D map (t-SNE, scikit-learn) of the vectors one model's kNN scorer sees: one machine type and section, or
all of them in one map.

The points are the memory bank of each section drawn (normal training clips of both domains and the SMOTE
samples made from the target clips) and its test clips, each L2-normalised as the scorer uses them. The panels
colour the same map by domain, by attribute class and by normal / anomalous, and, when the map holds several
sections, by machine type and section; SMOTE samples are purple crosses throughout. Whether target-domain test
clips sit among the target training clips (and SMOTE samples), and whether anomalies leave the normal clouds,
is what the map shows; distances between far-apart clusters (other sections) mean little in t-SNE.

To keep it fast, at most `max_points` points are mapped: the groups (per section: test clips, source training
clips, target training clips, SMOTE samples) share the cap equally, a group smaller than its share keeping all
its points and leaving the rest to the others; the choice within a group and t-SNE use a fixed seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import threadpoolctl
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from asd_jax.report import style

TRAIN, SMOTE, TEST = 0, 1, 2
DEFAULT_MAX_POINTS = 600
PCA_DIM = 50  # t-SNE runs on the first 50 principal components (the usual practice; faster, same picture)
_CLASS_COLORS = (style.BLUE, style.ORANGE, style.GREEN, style.VERMILLION, style.SKY_BLUE, style.YELLOW, style.BLACK)


@dataclasses.dataclass(frozen=True)
class MapPoints:
  """The points of one map.

  Attributes:
    vectors: [n, dim] the scorer's vectors.
    role: [n] TRAIN (normal training clip), SMOTE (synthetic bank entry) or TEST.
    domain: [n] 0 source / 1 target / -1 unknown (an evaluation set's test clips; every clip of a year without
      domains); SMOTE samples are target.
    label: [n] 0 normal / 1 anomalous / -1 unknown (unlabelled test clips); training clips and SMOTE samples are
      normal.
    attribute_class: [n] str, e.g. "fan/m-n_W" (a SMOTE sample: the class of its nearest target clip).
    section: [n] str, e.g. "fan 00", the point's machine type and section (default: all "").
  """

  vectors: np.ndarray
  role: np.ndarray
  domain: np.ndarray
  label: np.ndarray
  attribute_class: np.ndarray
  section: np.ndarray | None = None

  def __post_init__(self):
    n = len(self.vectors)
    if self.section is None:
      object.__setattr__(self, "section", np.full(n, "", dtype=object))
    for name in ("role", "domain", "label", "attribute_class", "section"):
      if len(getattr(self, name)) != n:
        raise ValueError(f"MapPoints: {n} vectors but {len(getattr(self, name))} entries of {name}")

  def take(self, idx: np.ndarray) -> "MapPoints":
    return MapPoints(*(np.asarray(getattr(self, f.name))[idx] for f in dataclasses.fields(self)))


def groups(points: MapPoints) -> np.ndarray:
  """[n] group id: 4 * (section's rank) + 0 test, 1 source training, 2 target training, 3 SMOTE."""
  role, domain = np.asarray(points.role), np.asarray(points.domain)
  _, section = np.unique(np.asarray(points.section).astype(str), return_inverse=True)
  return 4 * section.reshape(-1) + np.where(role == TEST, 0, np.where(role == SMOTE, 3, np.where(domain == 0, 1, 2)))


def subsample(group: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
  """Sorted indices of at most `max_points` points, the groups sharing the cap equally (module docstring)."""
  group = np.asarray(group)
  if len(group) <= max_points:
    return np.arange(len(group))
  rng = np.random.default_rng(seed)
  members = {g: np.flatnonzero(group == g) for g in np.unique(group)}
  left, kept = max_points, []
  for i, g in enumerate(sorted(members, key=lambda g: len(members[g]))):
    share = left // (len(members) - i)
    take = min(len(members[g]), share)
    kept.append(np.sort(rng.choice(members[g], size=take, replace=False)))
    left -= take
  return np.sort(np.concatenate(kept))


def project(vectors: np.ndarray, *, seed: int = 0) -> np.ndarray:
  """[n, 2] t-SNE coordinates of the L2-normalised `vectors` [n, dim] (PCA to 50 dims first)."""
  x = np.asarray(vectors, np.float64)
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  n = len(x)
  if n < 4:
    raise ValueError(f"an embedding map needs at least 4 points, got {n}")
  perplexity = float(min(30.0, (n - 1) / 3.0))
  # One thread, PCA included: on maps this small the OpenMP and BLAS threads cost more than they gain, and on a
  # busy 2-core machine (make test runs two workers) they made a 400-point map 5x slower (72 s against 13 s)
  # and the PCA of a 560-point map 0.7 s instead of 0.05 s.
  with threadpoolctl.threadpool_limits(1):
    if x.shape[1] > PCA_DIM and n > PCA_DIM:
      x = PCA(n_components=PCA_DIM, random_state=seed).fit_transform(x)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                max_iter=500).fit_transform(x)


def _scatter(ax, xy, points: MapPoints, colours: np.ndarray, entries: Sequence[tuple[str, str, np.ndarray]]):
  """Training points as small circles, test points as triangles, SMOTE samples as purple crosses."""
  role = np.asarray(points.role)
  for mask, marker, size, alpha in ((role == TRAIN, "o", 9, 0.55), (role == TEST, "^", 16, 0.85)):
    if mask.any():
      ax.scatter(xy[mask, 0], xy[mask, 1], c=colours[mask], marker=marker, s=size, alpha=alpha, linewidths=0)
  smote = role == SMOTE
  if smote.any():
    ax.scatter(xy[smote, 0], xy[smote, 1], c=style.SMOTE, marker="x", s=10, alpha=0.6, linewidths=0.8)
  handles = []
  for name, colour, marker in entries:
    handles.append(ax.scatter([], [], c=colour, marker=marker, s=18, label=name))
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_xlabel("t-SNE 1 (no units)")
  ax.set_ylabel("t-SNE 2 (no units)")
  ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=7)


def _categorical(ax, xy, points: MapPoints, values: np.ndarray, smote_entry, what: str, *, short: bool = True
                 ) -> None:
  """Colours by a categorical value (the most frequent `len(_CLASS_COLORS)` get a colour, others grey);
  `short`: legend names without their "<machine>/" prefix."""
  role = np.asarray(points.role)
  names, counts = np.unique(values[role != SMOTE], return_counts=True)
  ranked = [str(n) for n in names[np.argsort(-counts, kind="stable")]]
  shown = ranked[:len(_CLASS_COLORS)]
  palette = {name: _CLASS_COLORS[i] for i, name in enumerate(shown)}
  colours = np.array([palette.get(c, style.GREY) for c in values], dtype=object)
  entries = [(name.split("/", 1)[-1] if short else name, palette[name], "o") for name in shown]
  if len(ranked) > len(shown):
    entries.append((f"{len(ranked) - len(shown)} other {what}", style.GREY, "o"))
  _scatter(ax, xy, points, colours, entries + smote_entry)


@style.styled
def embedding_figure(title: str, xy: np.ndarray, points: MapPoints, *, note: str = "") -> Figure:
  """The panels of one map (`xy` [n, 2] from `project`): by domain, by attribute class, normal/anomalous, and
  by machine type and section when `points` hold more than one."""
  xy = np.asarray(xy)
  role, domain, label = (np.asarray(points.role), np.asarray(points.domain), np.asarray(points.label))
  classes = np.asarray(points.attribute_class).astype(str)
  sections = np.asarray(points.section).astype(str)
  several = len(np.unique(sections)) > 1
  fig = style.figure(7.4, 8.0) if several else style.figure(10.2, 4.3)
  axes = np.asarray(fig.subplots(2, 2) if several else fig.subplots(1, 3)).ravel()
  smote_entry = [("SMOTE sample", style.SMOTE, "x")] if (role == SMOTE).any() else []

  # Unknown domains and labels are drawn as unknown (grey, black), never as source or normal; legend entries only
  # for what is there.
  by_domain = np.where(domain == 1, style.TARGET, np.where(domain == 0, style.SOURCE, style.GREY)).astype(object)
  present = lambda r, d: bool(np.any((role == r) & (domain == d)))  # noqa: E731
  _scatter(axes[0], xy, points, by_domain,
           [(f"{name}, {what}", colour, marker) for d, name, colour in ((0, "source", style.SOURCE),
                                                                        (1, "target", style.TARGET),
                                                                        (-1, "domain unknown", style.GREY))
            for r, what, marker in ((TRAIN, "training", "o"), (TEST, "test", "^")) if present(r, d)] + smote_entry)
  axes[0].set_title("by domain")

  _categorical(axes[1], xy, points, classes, smote_entry, "classes", short=not several)
  axes[1].set_title("by attribute class (circles: training, triangles: test)")

  by_label = np.where(role == TRAIN, style.TRAIN, np.where(label == 1, style.ANOMALY, np.where(
      label == 0, style.NORMAL, style.BLACK))).astype(object)
  test = role == TEST
  label_entries = [("normal, training", style.TRAIN, "o")] + [
      (name, colour, "^") for value, name, colour in ((0, "normal, test", style.NORMAL),
                                                      (1, "anomalous, test", style.ANOMALY),
                                                      (-1, "unlabelled, test", style.BLACK))
      if np.any(test & (label == value))]
  _scatter(axes[2], xy, points, by_label, label_entries + smote_entry)
  axes[2].set_title("normal / anomalous")
  if several:
    _categorical(axes[3], xy, points, sections, smote_entry, "sections")
    axes[3].set_title("by machine type and section")
  fig.suptitle(title + (f"\n{note}" if note else ""))
  return fig
