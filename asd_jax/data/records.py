"""Typed records for DCASE Task 2 clips: one `ClipRecord` per wav file.

Every other module (label space, pipelines, scoring, evaluation) consumes these records, so
that the meaning of a clip is parsed once, from its path, and never re-derived downstream.
"""

from __future__ import annotations

import dataclasses

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
    return dict(self.attributes)
