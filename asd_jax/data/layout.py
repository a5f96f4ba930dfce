"""Scanning a DCASE Task 2 dataset folder into a sorted list of `ClipRecord`s.

A dataset root holds one folder per machine type (`<root>/<machine>/{train,test,supplemental}/*.wav`,
plus `attributes_<ss>.csv`; DCASE 2021 keeps the test clips in `source_test/` and `target_test/`, read as test
clips); a machine folder itself is also accepted as a root. Folders without any of those (e.g.
`ground_truth_data/`) are not machine types and are skipped. Every wav name is parsed (`filenames.py`) and
every wav header is opened (`soundfile.info`: 1-3 s for 7,000 clips on 2 shared CPU cores), so unreadable or empty
files, too short clips (with
`clip_seconds`, the rule of `asd_jax.audio.wav.check_duration`), clips whose channel count the channel
policy cannot read (with `channels`: a mono file for `far` or `cancel`, see `asd_jax.audio.channels`), NaN or
inf samples (with `finite`: float files are decoded, integer PCM cannot hold them; cost in BENCHMARKS.md) and
(with `require_train`) machine folders without training clips are found before any compute. All problems of
a scan are collected and raised together in one `DatasetError`, so one bad file can never silently shift
labels; clips short enough to be padded are listed in one warning.

Attributes come from `attributes_<ss>.csv` when it lists the file (authoritative: it resolves
values that contain underscores), else from the file name. `attributes="require"` turns a
missing CSV (for a machine whose names carry attributes) into an error; `"auto"` (default) falls
back to the names, which is what the 2020/2021 datasets (no CSV) need.
"""

from __future__ import annotations

import csv
import pathlib
from collections.abc import Iterable, Sequence

import soundfile
from absl import logging

from asd_jax.audio import channels as channels_lib
from asd_jax.audio import wav as wavlib
from asd_jax.data import filenames
from asd_jax.data import records as rec

ClipRecord = rec.ClipRecord
SPLIT_DIRS = (rec.SPLIT_TRAIN, rec.SPLIT_TEST, rec.SPLIT_SUPPLEMENTAL)
# DCASE 2021 keeps its test clips in these, one per domain, instead of test/ (dev and eval sets alike).
TEST_DIRS_2021 = ("source_test", "target_test")
MACHINE_DIRS = SPLIT_DIRS + TEST_DIRS_2021  # a folder holding any of these is a machine type
_CSV_KEY = "file_name"


class DatasetError(ValueError):
  """Problems found while scanning a dataset; `problems` lists one message per file."""

  def __init__(self, root: str | pathlib.Path, problems: Sequence[str]):
    self.problems = list(problems)
    shown = "\n  ".join(self.problems[:50])
    more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
    super().__init__(f"{len(self.problems)} problem(s) in dataset {root}:\n  {shown}{more}")


def read_attributes_csv(path: str | pathlib.Path) -> dict[str, tuple[tuple[str, str], ...]]:
  """Reads an official `attributes_<ss>.csv` -> {wav base name: ((name, value), ...)}.

  Columns: `file_name,d1p,d1v,d2p,d2v,...` (parameter/value pairs; empty cells and the
  `noAttribute` parameter are skipped).
  """
  path = pathlib.Path(path)
  with path.open(newline="") as f:
    rows = list(csv.reader(f))
  if not rows or not rows[0] or rows[0][0].strip() != _CSV_KEY:
    raise ValueError(f"{path}: expected a header starting with '{_CSV_KEY}', found {rows[:1]}")
  table = {}
  for line_no, row in enumerate(rows[1:], start=2):
    if not row or not row[0].strip():
      continue
    cells = [c.strip() for c in row[1:]]
    if len(cells) % 2:
      cells.append("")
    pairs = tuple((k, v) for k, v in zip(cells[0::2], cells[1::2])
                  if k and k != filenames.NO_ATTRIBUTE)
    name = pathlib.PurePosixPath(row[0].strip().replace("\\", "/")).name
    if name in table and table[name] != pairs:
      raise ValueError(f"{path}:{line_no}: {name} listed twice with different attributes")
    table[name] = pairs
  return table


def _machine_dirs(root: pathlib.Path) -> list[pathlib.Path]:
  if any((root / d).is_dir() for d in MACHINE_DIRS):
    return [root]
  return sorted(p for p in root.iterdir() if p.is_dir() and any((p / d).is_dir() for d in MACHINE_DIRS))


def _scan_machine(machine_dir: pathlib.Path, attributes: str, problems: list[str]) -> list[ClipRecord]:
  machine = machine_dir.name
  table: dict[str, tuple[tuple[str, str], ...]] = {}
  csv_paths = sorted(machine_dir.glob("attributes_*.csv"))
  for csv_path in csv_paths:
    try:
      table.update(read_attributes_csv(csv_path))
    except (ValueError, OSError, csv.Error) as e:
      problems.append(f"{csv_path}: unreadable attributes CSV: {e}")
  out = []
  for split_dir in MACHINE_DIRS:
    folder = machine_dir / split_dir
    if not folder.is_dir():
      continue
    split = rec.SPLIT_TEST if split_dir in TEST_DIRS_2021 else split_dir
    for path in sorted(folder.iterdir()):
      if path.suffix.lower() != ".wav":
        continue
      try:
        parsed = filenames.parse_name(path.name, supplemental=split_dir == rec.SPLIT_SUPPLEMENTAL)
      except filenames.FileNameError as e:
        problems.append(f"{path}: {e}")
        continue
      if parsed.split is not None and parsed.split != split:
        problems.append(f"{path}: name says split '{parsed.split}' but the file is in '{split_dir}/'")
        continue
      if split_dir in TEST_DIRS_2021 and parsed.domain != split_dir.split("_")[0]:
        problems.append(f"{path}: name says domain {parsed.domain!r} but the file is in '{split_dir}/'")
        continue
      attrs = filenames.parse_attribute_string(parsed.attribute_string)
      if path.name in table:
        listed = table[path.name]
        name_attrs = parsed.attribute_string
        if listed and name_attrs not in ("", filenames.NO_ATTRIBUTE) and (
            filenames.attribute_string(listed) != name_attrs):
          problems.append(f"{path}: attributes in the name ({name_attrs}) disagree with "
                          f"{machine_dir}/attributes_*.csv ({filenames.attribute_string(listed)})")
          continue
        attrs = listed if listed or not attrs else attrs
      elif (attributes == "require" and parsed.kind == rec.KIND_MACHINE
            and parsed.attribute_string not in ("", filenames.NO_ATTRIBUTE)):
        where = ", ".join(str(p) for p in csv_paths) or f"no attributes_*.csv in {machine_dir}"
        problems.append(f"{path}: not listed in the attributes CSV ({where})")
        continue
      out.append(ClipRecord(
          path=str(path), machine=machine, section=parsed.section, split=split,
          domain=parsed.domain, label=parsed.label, attributes=attrs, kind=parsed.kind))
  return out


def check_audio(records: Sequence[ClipRecord], problems: list[str], clip_seconds: float | None = None,
                channels: str | None = None, finite: bool = False) -> list[str]:
  """Opens every record's wav header: unreadable, empty, (given `clip_seconds`) too short files, (given a
  channel policy `channels`) files of a channel count it cannot read and (with `finite`) files holding NaN or
  inf samples are appended to `problems`; returns the warnings of clips short enough to be padded
  (`wav.check_duration`). `finite` decodes only files of a sample format that can hold them (float; integer
  PCM, every DCASE release, cannot: `wav.may_hold_non_finite`)."""
  if channels is not None:
    channels_lib.check_policy(channels)
  warnings = []
  for r in records:
    try:
      info = soundfile.info(r.path)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
      problems.append(f"{r.path}: cannot read as audio: {e}")
      continue
    if info.frames <= 0:
      problems.append(f"{r.path}: empty audio (0 samples)")
      continue
    problem = channels_lib.channel_problem(channels, info.channels) if channels is not None else None
    if problem:
      problems.append(f"{r.path}: {problem}")
      continue
    if finite and wavlib.may_hold_non_finite(info.subtype):
      try:
        wavlib.check_finite(r.path, soundfile.read(r.path, dtype="float32", always_2d=True)[0], info.samplerate)
      except (wavlib.WavError, soundfile.LibsndfileError, RuntimeError, OSError) as e:
        problems.append(str(e) if str(e).startswith(r.path) else f"{r.path}: cannot read as audio: {e}")
        continue
    if clip_seconds:
      try:
        warning = wavlib.check_duration(r.path, info.frames / info.samplerate, clip_seconds)
      except wavlib.WavError as e:
        problems.append(str(e))
        continue
      if warning:
        warnings.append(warning)
  return warnings


def _machines_without_training_clips(dirs: Sequence[pathlib.Path], records: Sequence[ClipRecord]) -> list[str]:
  trained = {r.machine for r in records if r.split == rec.SPLIT_TRAIN and r.kind == rec.KIND_MACHINE}
  return [f"{d}: no training clips (no .wav of a machine in {d / rec.SPLIT_TRAIN}/); every machine type needs "
          "normal training clips, or remove the folder" for d in dirs if d.name not in trained]


def scan_dataset(root: str | pathlib.Path, *, attributes: str = "auto", audio: bool = True,
                 clip_seconds: float | None = None, require_train: bool = False,
                 channels: str | None = None, finite: bool = False) -> list[ClipRecord]:
  """Scans `root` (all machine types, or one machine folder) -> records sorted by path.

  Args:
    root: dataset root (`<root>/<machine>/{train,test,supplemental}`) or one machine folder.
    attributes: "auto" (CSV when present, else names) or "require" (every attributed clip
      must be listed in an `attributes_<ss>.csv`).
    audio: open every wav header (`check_audio`); False only parses the names.
    clip_seconds: the clip length the wavs will be read at: too short clips are errors, short ones are
      listed in a warning (see `asd_jax.audio.wav.check_duration`). None: lengths are not checked.
    require_train: every machine folder must hold training clips (`train/`), as training needs.
    channels: the channel policy the wavs will be read with (`asd_jax.audio.channels`): a file whose channel
      count it cannot read is a problem. None: channels are not checked.
    finite: decode every file of a float sample format and refuse NaN or inf samples (training's scan: a
      damaged clip would otherwise stop the run when its batch is read, after compiling and training).

  Raises:
    DatasetError: listing every unparseable or unreadable file, split mismatch, attribute conflict, too
      short clip, file of the wrong channel count (with `channels`), file with NaN or inf samples (with
      `finite`) and (with `require_train`) machine folder without training clips.
  """
  if attributes not in ("auto", "require"):
    raise ValueError(f"attributes must be 'auto' or 'require', got {attributes!r}")
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DatasetError(root, [f"{root}: not a directory"])
  problems: list[str] = []
  found = []
  dirs = _machine_dirs(root)
  if not dirs:
    raise DatasetError(root, [f"{root}: no machine folder with train/, test/ or supplemental/"])
  for machine_dir in dirs:
    found.extend(_scan_machine(machine_dir, attributes, problems))
  if not found and not problems:
    raise DatasetError(root, [f"{root}: no .wav files found"])
  if require_train:
    problems.extend(_machines_without_training_clips(dirs, found))
  found = sorted(found, key=lambda r: r.path)
  if audio:
    short = check_audio(found, problems, clip_seconds, channels, finite)
    if short:
      logging.warning("%d clip(s) of %s shorter than half the %g s clip length are padded:\n  %s%s", len(short),
                      root, clip_seconds, "\n  ".join(short[:20]),
                      f"\n  ... and {len(short) - 20} more" if len(short) > 20 else "")
  if problems:
    raise DatasetError(root, problems)
  return found


def select(records: Iterable[ClipRecord], *, machine: str | None = None, split: str | None = None,
           domain: str | None = None, label: str | None = None, kind: str | None = None
           ) -> list[ClipRecord]:
  """The records matching every given field (None = any), in their original order."""
  want = {"machine": machine, "split": split, "domain": domain, "label": label, "kind": kind}
  want = {k: v for k, v in want.items() if v is not None}
  return [r for r in records if all(getattr(r, k) == v for k, v in want.items())]


def machines(records: Iterable[ClipRecord]) -> list[str]:
  return sorted({r.machine for r in records})
