"""Training-health checks: did a fine-tuning run learn its task, and does a config read all of its clips?

Pure functions over numbers a run already has (its end-of-training metrics, the dataset's clip lengths), so the
pipeline, the report and a user's script can ask the same question and print the same warning.

`check_training`: a classifier that ends near the accuracy of always answering the most frequent class has not
learned its task, and its embeddings are not trained features (issue 22: the demo's models ended at 0.04-0.2
training accuracy). "Near" is within `NEAR_CHANCE` of the way from chance to perfect: with the demo's 34 classes
(chance 0.124, the largest class's share) that is an accuracy below 0.21.

`clip_length_warning`: a config reads the first `clip_seconds` of every clip; on a dataset of longer clips the
rest is never heard (the demo's 2 s on the real 10 s DCASE clips scores a fifth of each recording).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

NEAR_CHANCE = 0.1  # project: fraction of the way from chance to 1 below which an accuracy counts as chance
LONGER_TOLERANCE_S = 0.05  # clips this much longer than the read length are not worth a warning (rounding)


@dataclasses.dataclass(frozen=True)
class TrainingHealth:
  """The verdict on one run.

  Attributes:
    near_chance: the final training accuracy (or, when given, the held-out one) is near chance.
    chance: the chance accuracy used (the largest class's share, or 1 / classes).
    threshold: accuracies below this count as near chance.
    warnings: one sentence per problem found (empty when healthy).
  """

  near_chance: bool
  chance: float
  threshold: float
  warnings: tuple[str, ...]

  @property
  def healthy(self) -> bool:
    return not self.warnings


def chance_level(num_classes: int, chance_accuracy: float | None = None) -> float:
  """`chance_accuracy` (the largest class's share of the clips) when known, else `1 / num_classes`."""
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  if chance_accuracy is not None and math.isfinite(chance_accuracy):
    return max(float(chance_accuracy), 1.0 / num_classes)
  return 1.0 / num_classes


def check_training(*, train_accuracy: float, num_classes: int, heldout_accuracy: float | None = None,
                   chance_accuracy: float | None = None, model: str = "model") -> TrainingHealth:
  """Whether a fine-tuning run ended near chance.

  Args:
    train_accuracy: final accuracy on the training clips (eval mode, `holdout.Evaluator`), in [0, 1].
    num_classes: classes of the run's label space.
    heldout_accuracy: final accuracy on held-out clips, None (or NaN) when there are none.
    chance_accuracy: the largest class's share of the training clips (`holdout.chance_accuracy`); None: 1/C.
    model: the name the warnings give.

  Returns:
    A `TrainingHealth`; `near_chance` is set when the training accuracy is near chance, or the held-out one is
    (a model that memorised its clips without learning anything that carries over).
  """
  if not math.isfinite(train_accuracy):
    raise ValueError(f"{model}: training accuracy is {train_accuracy}")
  chance = chance_level(num_classes, chance_accuracy)
  threshold = chance + NEAR_CHANCE * (1.0 - chance)
  warnings = []
  if train_accuracy < threshold:
    warnings.append(f"{model}: training accuracy {train_accuracy:.3f} is near chance ({chance:.3f} for "
                    f"{num_classes} classes): the model did not learn its classification task, so its embeddings "
                    "are not trained features; train longer or with a higher learning rate")
  heldout = heldout_accuracy is not None and math.isfinite(heldout_accuracy)
  if heldout and heldout_accuracy < threshold <= train_accuracy:
    warnings.append(f"{model}: held-out accuracy {heldout_accuracy:.3f} is near chance ({chance:.3f}) although "
                    f"the training accuracy is {train_accuracy:.3f}: it memorised its training clips")
  return TrainingHealth(near_chance=bool(warnings), chance=chance, threshold=threshold, warnings=tuple(warnings))


def check_metrics(rows: Sequence[Mapping[str, Any]], *, model: str = "model") -> TrainingHealth | None:
  """`check_training` on the last row of a `metrics.jsonl` that has the end-of-training evaluation
  (`train_accuracy`, `num_classes`; see `asd_jax.finetuning.fine_tune`); None when no row has it."""
  final = [r for r in rows if "train_accuracy" in r and "num_classes" in r]
  if not final:
    return None
  row = final[-1]
  return check_training(train_accuracy=float(row["train_accuracy"]), num_classes=int(row["num_classes"]),
                        heldout_accuracy=row.get("heldout_accuracy"), chance_accuracy=row.get("chance_accuracy"),
                        model=model)


def clip_length_warning(durations_s: Sequence[float], clip_seconds: float, *, model: str = "model") -> str | None:
  """A warning when clips are longer than the `clip_seconds` a config reads (only their start is used).

  `durations_s`: every clip's length in seconds; `model`: the name(s) the warning starts with. None when no clip
  is longer than `clip_seconds` (plus a 50 ms rounding tolerance).
  """
  longer = [d for d in durations_s if d > clip_seconds + LONGER_TOLERANCE_S]
  if not longer:
    return None
  return (f"{model}: only the first {clip_seconds:g} s of each clip is read, but {len(longer)} of "
          f"{len(durations_s)} clips are longer (up to {max(longer):.3g} s): the rest of each recording is never "
          "used; set config.data.clip_seconds to the clips' length")
