"""DCASE Task 2 file names (2020-2026) parsed into their parts, without touching the disk.

One function, `parse_name`, knows every naming scheme the challenge has used:

| year(s)    | example                                                              |
| ---------- | -------------------------------------------------------------------- |
| 2020 dev   | `normal_id_00_00000000.wav`, `anomaly_id_02_00000005.wav`            |
| 2020 eval  | `id_01_00000000.wav` (label hidden)                                  |
| 2021 dev   | `section_00_source_train_normal_0000_strength_1_ambient.wav`,        |
|            | `section_01_target_test_anomaly_0003.wav` (no attributes)            |
| 2021 eval  | `section_03_source_test_0000.wav` (domain known, label hidden)       |
| 2022-2025  | `section_00_source_train_normal_0000_vel_6_loc_A.wav`,               |
| dev        | `section_00_source_train_normal_0000_car_A1_spd_28V_mic_1.wav`,      |
|            | `section_00_target_test_anomaly_0001_noAttribute.wav`                |
| 2022+ eval | `section_00_0000.wav`, `section_00_test_0000.wav` (all hidden)       |
| 2025 supp. | files in `<machine>/supplemental/`, see below                        |
| 2026 dev   | `section_00_source_train_normal_0000_car_B1_spd_2_mic_2_mic_1.wav`,  |
|            | `..._pro_X.wav`, `..._nzl_1_pow_1.wav`, `..._noAttribute.wav`        |

The attribute part of a name is a flat `key_value_key_value...` string. Values may themselves
contain underscores (2021 `strength_1_ambient`), which a name alone cannot resolve; the
dataset's `attributes_<ss>.csv` can (see `layout.py`). Without it, `parse_attribute_string`
pairs tokens from the left and appends an odd trailing token to the last value, so
`strength_1_ambient` becomes `(("strength", "1_ambient"),)`. `noAttribute` (and an empty
string, as in `..._0000_.wav`) mean "no attributes".

DCASE 2026 quirks, all kept as written: a name may repeat (ToyCarEmu's and ToyDrone's
`car_B1_spd_2_mic_2_mic_1` gives `(("car", "B1"), ("spd", "2"), ("mic", "2"), ("mic", "1"))`; attributes are an
ordered tuple of pairs, never a dict, so no value is dropped); values keep their case (gearboxEmu's test clips
say `pro_Y` for the target anomalies and `pro_y` for the target normal clips: two different strings, so a test
clip's attributes must never feed a score); ToyCar and ToyCarEmu number their test clips 0000-0199 across the
four domain/label categories (a number identifies a clip, not its place in a category).

Supplementary 2025 recordings: the baseline README (nttcslab/dcase2023_task2_baseline_ae) puts
them in `<machine>/supplemental/` but only shows an abbreviated name (`section_00_machine_0001_.wav`),
so the parser is deliberately tolerant. Inside a `supplemental` folder any `section_<ss>_...`
name is accepted; the underscore-separated tokens decide the kind: `noise` -> noise-only,
otherwise `clean` or `machine` -> clean machine sound; a `source`/`target` token sets the domain,
the first all-digit token is the clip number and the tokens after it are attributes. The real
2025 dev set, as third-party material shows it, names them
`section_00_machine_source_0000_noAttribute.wav` (and, for noise only,
`section_00_noise_source_0000_noAttribute.wav`); the synthetic generator writes that form.
"""

from __future__ import annotations

import dataclasses
import re

from asd_jax.data import records

NO_ATTRIBUTE = "noAttribute"


class FileNameError(ValueError):
  """A file name that matches no DCASE naming scheme."""


@dataclasses.dataclass(frozen=True)
class ParsedName:
  """The parts of one DCASE file name (fields the name does not carry are None)."""

  section: str
  number: str
  split: str | None
  domain: str | None
  label: str | None
  attribute_string: str
  kind: str = records.KIND_MACHINE


_DEV = re.compile(
    r"^section_(?P<section>\d{2})_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<number>\d+)(?:_(?P<attrs>.*))?$")
_EVAL_2021 = re.compile(r"^section_(?P<section>\d{2})_(?P<domain>source|target)_test_(?P<number>\d+)$")
_EVAL = re.compile(r"^section_(?P<section>\d{2})_(?:test_)?(?P<number>\d+)$")
_DEV_2020 = re.compile(r"^(?P<label>normal|anomaly)_id_(?P<section>\d{2})_(?P<number>\d+)$")
_EVAL_2020 = re.compile(r"^id_(?P<section>\d{2})_(?P<number>\d+)$")
_SUPPLEMENTAL = re.compile(r"^section_(?P<section>\d{2})_(?P<rest>.+)$")


def _stem(name: str) -> str:
  if not name.lower().endswith(".wav"):
    raise FileNameError(f"{name!r}: expected a .wav file")
  return name[:-4]


def parse_name(name: str, *, supplemental: bool = False) -> ParsedName:
  """Parses a DCASE wav base name (no folders); `supplemental` for files in `supplemental/`.

  Raises:
    FileNameError: naming the file, when no scheme matches.
  """
  stem = _stem(name)
  if supplemental:
    return _parse_supplemental(name, stem)
  if m := _DEV.match(stem):
    return ParsedName(m["section"], m["number"], m["split"], m["domain"], m["label"], m["attrs"] or "")
  if m := _EVAL_2021.match(stem):
    return ParsedName(m["section"], m["number"], "test", m["domain"], None, "")
  if m := _EVAL.match(stem):
    return ParsedName(m["section"], m["number"], "test", None, None, "")
  if m := _DEV_2020.match(stem):
    # 2020 had no domains: every clip is treated as source domain.
    return ParsedName(m["section"], m["number"], None, records.SOURCE, m["label"], "")
  if m := _EVAL_2020.match(stem):
    return ParsedName(m["section"], m["number"], "test", records.SOURCE, None, "")
  raise FileNameError(
      f"{name!r} matches no DCASE naming scheme (expected e.g. "
      "'section_00_source_train_normal_0000_<attrs>.wav', 'section_00_0000.wav' or "
      "'normal_id_00_00000000.wav')")


def _parse_supplemental(name: str, stem: str) -> ParsedName:
  m = _SUPPLEMENTAL.match(stem)
  if not m:
    raise FileNameError(f"{name!r} in supplemental/: expected a name starting with 'section_<ss>_'")
  tokens = m["rest"].split("_")
  number_at = next((i for i, t in enumerate(tokens) if t.isdigit()), None)
  head = tokens if number_at is None else tokens[:number_at]
  if "noise" in head:
    kind = records.KIND_NOISE
  elif "clean" in head or "machine" in head:
    kind = records.KIND_CLEAN
  else:
    raise FileNameError(
        f"{name!r} in supplemental/: cannot tell clean machine from noise-only recording "
        "(expected a 'clean', 'machine' or 'noise' token before the clip number)")
  domain = next((t for t in head if t in (records.SOURCE, records.TARGET)), None)
  number = "" if number_at is None else tokens[number_at]
  attrs = "" if number_at is None else "_".join(tokens[number_at + 1:])
  return ParsedName(m["section"], number, records.SPLIT_SUPPLEMENTAL, domain, None, attrs, kind)


def parse_attribute_string(text: str) -> tuple[tuple[str, str], ...]:
  """`"car_A1_spd_28V"` -> `(("car", "A1"), ("spd", "28V"))`; see the module docstring for quirks."""
  if text in ("", NO_ATTRIBUTE):
    return ()
  tokens = text.split("_")
  if len(tokens) == 1:
    return (("attribute", tokens[0]),)
  pairs = [[tokens[i], tokens[i + 1]] for i in range(0, len(tokens) - 1, 2)]
  if len(tokens) % 2:
    pairs[-1][1] += "_" + tokens[-1]
  return tuple((k, v) for k, v in pairs)


def attribute_string(attributes: tuple[tuple[str, str], ...]) -> str:
  """Inverse of `parse_attribute_string` (`noAttribute` for none), as written in file names."""
  if not attributes:
    return NO_ATTRIBUTE
  return "_".join(f"{k}_{v}" for k, v in attributes)


_SECTION_TOKEN = re.compile(r"(?:^|_)(?:section|id)_(?P<section>\d{2})(?:_|$)")


def section_of(name: str) -> str | None:
  """The two-digit section of a recording's base name (the machine id in 2020's names), None without one.

  A DCASE name of any year (`parse_name`: `section_01_...`, 2020's `normal_id_01_...` and `id_01_...`), else the
  first `section_<ss>` or `id_<ss>` token of the name (`pump_section_01_take2.wav`, a recording named by hand).
  """
  try:
    return parse_name(name).section
  except FileNameError:
    match = _SECTION_TOKEN.search(name[:-4] if name.lower().endswith(".wav") else name)
    return match["section"] if match else None
