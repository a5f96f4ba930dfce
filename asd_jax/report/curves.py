"""Training curves from the rows of a `metrics.jsonl` (fine-tuning, pre-training, or anything alike).

Generic on purpose: every numeric key present in at least two rows is drawn against the step. Keys are grouped
into panels by what they measure (losses together, SCAdaCos scales together, ...); known keys get a readable
name and unit, unknown ones appear under their own name in a panel of their own, so a new loss term (e.g. of
pre-training) shows up without a change here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from asd_jax.report import style

# Bookkeeping columns, not curves.
SKIPPED = ("step", "epoch", "compile_s")
# Readable names of the keys the fine-tuning loops write (`training.train_step`, `models.dual_branch`).
KNOWN_NAMES = {
    "loss": "total loss", "accuracy": "batch accuracy (train mode)", "grad_norm": "gradient norm",
    "train_accuracy": "training clips (eval mode)", "heldout_accuracy": "held-out clips (eval mode)",
    "main_loss": "main SCAdaCos loss", "featex_loss": "featex SCAdaCos loss",
    "main_scale": "main head", "featex_scale": "featex head", "scale": "SCAdaCos",
    "main_median_angle": "main head", "featex_median_angle": "featex head", "median_angle": "SCAdaCos",
    "step_s": "step time", "clips_per_s": "clips per second", "learning_rate": "learning rate",
}


@dataclasses.dataclass(frozen=True)
class Panel:
  """One panel: its title, y-axis label, and the keys drawn in it."""

  title: str
  ylabel: str
  keys: tuple[str, ...]
  log_y: bool = False


# (family, test on the key, title, y label, log scale); the first family that matches takes the key.
_FAMILIES = (
    ("loss", lambda k: k == "loss" or k.endswith("_loss") or k.startswith("loss_"), "losses", "loss", False),
    ("accuracy", lambda k: "accuracy" in k, "classification accuracy", "accuracy (fraction of the clips)", False),
    ("scale", lambda k: k == "scale" or k.endswith("_scale"), "SCAdaCos scale s", "scale s (logit multiplier)",
     False),
    ("angle", lambda k: "angle" in k, "median angle to the target sub-clusters",
     "angle (radians, summed over sub-clusters)", False),
    ("grad", lambda k: "grad_norm" in k, "gradient norm", "global L2 norm of the gradients", True),
    ("lr", lambda k: "learning_rate" in k or k == "lr", "learning rate", "learning rate", True),
    ("speed", lambda k: k in ("step_s", "clips_per_s"), "", "", False),
)


def series(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{key: (steps [m], values [m])} of every numeric key (not `SKIPPED`) with at least 2 finite values."""
  out: dict[str, tuple[list[float], list[float]]] = {}
  for row in rows:
    step = row.get("step")
    if not isinstance(step, (int, float)):
      continue
    for key, value in row.items():
      if key in SKIPPED or isinstance(value, bool) or not isinstance(value, (int, float)):
        continue
      if not math.isfinite(value):
        continue
      xs, ys = out.setdefault(key, ([], []))
      xs.append(float(step))
      ys.append(float(value))
  return {k: (np.asarray(xs), np.asarray(ys)) for k, (xs, ys) in out.items() if len(xs) >= 2}


def panels(keys: Sequence[str], *, loss_label: str = "loss") -> list[Panel]:
  """The panels for `keys`, known families in a fixed order, then one panel per unknown key.

  `loss_label`: the y label of the losses panel (its unit depends on the run: fine-tuning losses are
  cross-entropies in nats, pre-training losses are regression errors).
  """
  keys = list(keys)
  grouped: dict[str, list[str]] = {}
  unknown = []
  for key in keys:
    family = next((f for f in _FAMILIES if f[1](key)), None)
    if family is None:
      unknown.append(key)
    else:
      grouped.setdefault(family[0], []).append(key)
  out = []
  for name, _, title, ylabel, log_y in _FAMILIES:
    if name not in grouped:
      continue
    if name == "speed":  # two units: one panel each
      for key in grouped[name]:
        out.append(Panel(KNOWN_NAMES[key], "seconds per step" if key == "step_s" else "clips / s", (key,)))
      continue
    out.append(Panel(title, loss_label if name == "loss" else ylabel, tuple(grouped[name]), log_y))
  out += [Panel(key, key, (key,)) for key in unknown]
  return out


@style.styled
def curves_figure(title: str, data: Mapping[str, tuple[np.ndarray, np.ndarray]], *, columns: int = 3,
                  loss_label: str = "loss") -> Figure:
  """One panel per `panels(data)`, each key a line against the training step.

  Args:
    data: from `series`; loss_label: see `panels`.
  """
  if not data:
    raise ValueError(f"curves_figure({title!r}): no numeric series with at least two points")
  chosen = panels(list(data), loss_label=loss_label)
  columns = min(columns, len(chosen))
  n_rows = math.ceil(len(chosen) / columns)
  fig = style.figure(3.2 * columns, 2.5 * n_rows + 0.3)
  axes = np.asarray(fig.subplots(n_rows, columns, squeeze=False)).ravel()
  for ax, panel in zip(axes, chosen):
    for i, key in enumerate(panel.keys):
      steps, values = data[key]
      colour, dash = style.line_style(i)
      ax.plot(steps, values, color=colour, linestyle=dash, marker="." if len(steps) < 20 else None,
              label=KNOWN_NAMES.get(key, key))
    values = np.concatenate([data[k][1] for k in panel.keys])
    if panel.log_y and np.all(values > 0) and values.max() > 20 * values.min():  # log only over decades
      ax.set_yscale("log")
    ax.set_title(panel.title)
    ax.set_xlabel("training step")
    ax.set_ylabel(panel.ylabel)
    if len(panel.keys) > 1:
      ax.legend(loc="best")
  for ax in axes[len(chosen):]:
    ax.set_visible(False)
  fig.suptitle(title)
  return fig
