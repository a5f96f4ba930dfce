"""Typed records for DCASE Task 2 clips: one `ClipRecord` per wav file.

Every other module (label space, pipelines, scoring, evaluation) consumes these records, so
that the meaning of a clip is parsed once, from its path, and never re-derived downstream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

SOURCE = "source"
TARGET = "target"
NORMAL = "normal"
ANOMALY = "anomaly"

SPLIT_TRAIN = "train"
SPLIT_TEST = "test"
SPLIT_SUPPLEMENTAL = "supplemental"

# What a recording contains: an ordinary machine clip, or one of the DCASE 2025
# supplementary recordings of the same machine type.
KIND_MACHINE = "machine"
KIND_CLEAN = "clean"  # clean machine sound, no factory noise
KIND_NOISE = "noise"  # factory noise only, no machine


@dataclasses.dataclass(frozen=True, order=True)
class ClipRecord:
  """One clip of a DCASE Task 2 dataset.

  Attributes:
    path: path of the wav file.
    machine: machine type, e.g. "fan", "ToyCar".
    section: two-digit section id, e.g. "00".
    split: "train", "test" or "supplemental".
    domain: "source", "target" or None when hidden (eval test clips).
    label: "normal", "anomaly" or None when hidden (eval test clips).
    attributes: ((name, value), ...) in file-name order; empty when none are known.
    kind: KIND_MACHINE, KIND_CLEAN or KIND_NOISE.
  """

  path: str
  machine: str
  section: str
  split: str
  domain: str | None = None
  label: str | None = None
  attributes: tuple[tuple[str, str], ...] = ()
  kind: str = KIND_MACHINE

  @property
  def attribute_dict(self) -> dict[str, str]:
    """{name: value}; ValueError naming the clip when a name repeats (DCASE 2026's `..._mic_2_mic_1`), which a dict
    would silently collapse to its last value: use `attributes`, which keeps every pair in order."""
    names = [k for k, _ in self.attributes]
    repeated = sorted({k for k in names if names.count(k) > 1})
    if repeated:
      raise ValueError(f"{self.path}: attribute name(s) {repeated} repeat in {self.attributes}; a dict would keep "
                       "only the last value (use .attributes)")
    return dict(self.attributes)


# Which clips play which part; the one definition, used by fine-tuning, scoring and the pipeline.


def is_fine_tuning_clip(record: ClipRecord, *, supplemental: bool = True) -> bool:
  """Clips a classifier is fine-tuned on: every `train/` clip and (`supplemental`) the supplementary recordings
  (clean machine and noise only, classes of their own)."""
  return record.split == SPLIT_TRAIN or (supplemental and record.split == SPLIT_SUPPLEMENTAL)


def is_bank_clip(record: ClipRecord) -> bool:
  """Clips that make the normal memory banks of kNN scoring: normal machine clips of `train/` (supplementary
  recordings are not of the monitored condition, and a training clip is never anomalous)."""
  return record.split == SPLIT_TRAIN and record.kind == KIND_MACHINE and record.label != ANOMALY


def is_test_clip(record: ClipRecord) -> bool:
  """Clips to score: machine clips of `test/`."""
  return record.split == SPLIT_TEST and record.kind == KIND_MACHINE


def group_by_section(records: Sequence[ClipRecord]) -> dict[tuple[str, str], np.ndarray]:
  """{(machine, section): [n] int64 indices of the records of that section, in input order}, sorted by key."""
  groups: dict[tuple[str, str], list[int]] = {}
  for i, r in enumerate(records):
    groups.setdefault((r.machine, r.section), []).append(i)
  return {key: np.asarray(idx, np.int64) for key, idx in sorted(groups.items())}
