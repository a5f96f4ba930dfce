"""DCASE Task 2 submission and ground-truth files.

Submission folder (one pair per machine type and section):
  anomaly_score_<machine>_section_<ss>_test.csv    rows `clip.wav,score`
  decision_result_<machine>_section_<ss>_test.csv  rows `clip.wav,0|1`
or, as the official baseline writes them and the official evaluators also accept (`section_files`),
  anomaly_score_DCASE<year>T2<machine>_section_<ss>_test_seed<seed><tag>_Eval.csv    (and decision_result_...)
e.g. `anomaly_score_DCASE2026T2ToyCarEmu_section_00_test_seed13711_id(0_)_Eval.csv`. The machine name is matched
whole (ToyCar does not take ToyCarEmu's files); a folder holding several baseline runs of one section (seeds,
tags) must say which (`seed`, `tag`), and the plain name wins over a baseline name.
Ground-truth folder, as in the official evaluator:
  ground_truth_data/ground_truth_<machine>_section_<ss>_test.csv        `clip.wav,0|1` (1 = anomalous)
  ground_truth_domain/ground_truth_<machine>_section_<ss>_test.csv      `clip.wav,0|1` (1 = target)
  ground_truth_attributes/ground_truth_<machine>_section_<ss>_test.csv  `clip.wav,<full dev name>`
The attributes files let a submission name clips by their full development names (the second
column plus ".wav"); those names are mapped to the short names of the ground truth. The folder
`ground_truth_attributes` may be absent, then score files must use the ground-truth names.
Unlike the official script, which pairs rows by sorting both files, clips are matched by name,
and a missing, extra or duplicate clip is an error. Every row must have exactly two fields: a decimal
comma (`clip,-0,695`) or an extra column would otherwise be read as another number without a word; a
file that is not UTF-8 text (a byte order mark is allowed) is an error naming the file.

Machine lists: `read_ground_truth(..., release=(2026, "eval"))` also checks that the ground truth holds exactly
the machine types of that release (`asd_jax.data.releases`: 2023-2026, dev and eval), naming the missing and
unexpected ones, so an evaluation of a whole release cannot silently leave a machine type out.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np

from asd_jax import atomic
from asd_jax.data import records as records_lib
from asd_jax.data import releases

GT_DATA = "ground_truth_data"
GT_DOMAIN = "ground_truth_domain"
GT_ATTRIBUTES = "ground_truth_attributes"
_GT_NAME = re.compile(r"^ground_truth_(?P<machine>.+)_section_(?P<section>\d\d)_test\.csv$")


def score_file_name(machine: str, section: str) -> str:
  return f"anomaly_score_{machine}_section_{section}_test.csv"


def decision_file_name(machine: str, section: str) -> str:
  return f"decision_result_{machine}_section_{section}_test.csv"


def ground_truth_file_name(machine: str, section: str) -> str:
  return f"ground_truth_{machine}_section_{section}_test.csv"


def baseline_file_name(kind: str, year: int, machine: str, section: str, seed: int, tag: str = "") -> str:
  """The official baseline's name of a section's `kind` ("anomaly_score" or "decision_result") file."""
  return f"{kind}_{releases.baseline_prefix(year)}{machine}_section_{section}_test_seed{seed}{tag}_Eval.csv"


def _baseline_pattern(kind: str, machine: str, section: str) -> re.Pattern:
  return re.compile(rf"^{kind}_DCASE(?P<year>\d{{4}})T2{re.escape(machine)}_section_{section}_test_seed"
                    rf"(?P<seed>\d+)(?P<tag>.*)_Eval\.csv$")


def section_files(directory: str, machine: str, section: str, *, seed: int | None = None,
                  tag: str | None = None) -> tuple[str, str]:
  """(anomaly-score path, decision path) of one section in a submission folder: the plain names when the score
  file exists, else the one baseline-style pair (see the module docstring) that matches `seed` and `tag` (None:
  any). Missing files are left to the reader (FileNotFoundError naming the plain name).

  Raises:
    ValueError: several baseline-style score files match (listed; pass seed and tag).
  """
  plain = os.path.join(directory, score_file_name(machine, section))
  if os.path.isfile(plain) or not os.path.isdir(directory):
    return plain, os.path.join(directory, decision_file_name(machine, section))
  pattern = _baseline_pattern("anomaly_score", machine, section)
  found = []
  for name in sorted(os.listdir(directory)):
    m = pattern.match(name)
    if m and (seed is None or int(m["seed"]) == seed) and (tag is None or m["tag"] == tag):
      found.append((name, m))
  if not found:
    return plain, os.path.join(directory, decision_file_name(machine, section))
  if len(found) > 1:
    raise ValueError(f"{directory}: {len(found)} baseline-style score files for {machine} section {section} "
                     f"({', '.join(n for n, _ in found)}); say which seed and tag to evaluate")
  name, m = found[0]
  decision = baseline_file_name("decision_result", int(m["year"]), machine, section, int(m["seed"]), m["tag"])
  return os.path.join(directory, name), os.path.join(directory, decision)


def _read_rows(path: str) -> list[tuple[int, str, str]]:
  """(line number, clip, value) of a two-column CSV; blank lines are skipped.

  Raises ValueError naming the file (and line) for a row of other than two fields, and for a file that is
  not UTF-8 text."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"missing file: {path}")
  rows = []
  reader = None
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f, strict=True)
      for row in reader:
        if not row or all(not c.strip() for c in row):
          continue
        if len(row) != 2:
          hint = (" (a decimal comma? write -0.695, not -0,695)" if len(row) == 3 and row[1].strip().lstrip("+-")
                  .isdigit() and row[2].strip().isdigit() else "")
          raise ValueError(f"{path}:{reader.line_num}: expected 'clip,value' (2 fields), found {len(row)}: "
                           f"{','.join(row)!r}{hint}")
        rows.append((reader.line_num, row[0].strip(), row[1].strip()))
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not a UTF-8 text CSV file (undecodable byte at offset {e.start}); is it "
                     "binary?") from None
  except csv.Error as e:  # a NUL byte, an unterminated quote
    raise ValueError(f"{path}:{reader.line_num if reader else 1}: not a readable CSV row ({e}); is the file "
                     "binary?") from None
  return rows


def read_named_values(path: str, *, integer: bool = False, rename: dict[str, str] | None = None) -> dict[str, float]:
  """{clip: value} of a `clip,value` CSV, with clips renamed through `rename` where listed.

  Raises ValueError naming the file, line and clip for a non-numeric value (or not 0/1 when
  `integer`) and for a clip listed twice.
  """
  values: dict[str, float] = {}
  lines: dict[str, int] = {}
  for line_no, clip, text in _read_rows(path):
    name = rename.get(clip, clip) if rename else clip
    try:
      value = float(text)
    except ValueError:
      raise ValueError(f"{path}:{line_no}: clip {clip}: value {text!r} is not a number") from None
    if not np.isfinite(value):
      raise ValueError(f"{path}:{line_no}: clip {clip}: value {text!r} is not finite")
    if integer:
      if value not in (0.0, 1.0):
        raise ValueError(f"{path}:{line_no}: clip {clip}: expected 0 or 1, found {text!r}")
      value = int(value)
    if name in values:
      raise ValueError(f"{path}: clip {name} listed twice (lines {lines[name]} and {line_no})")
    values[name] = value
    lines[name] = line_no
  if not values:
    raise ValueError(f"{path}: no rows")
  return values


@dataclasses.dataclass(frozen=True)
class SectionTruth:
  """Ground truth of one section: clip names (sorted), labels and domains (0/1), name map."""

  machine: str
  section: str
  clips: list[str]
  labels: np.ndarray
  domains: np.ndarray
  full_to_short: dict[str, str]


def read_ground_truth(directory: str, *, release: tuple[int, str] | None = None) -> list[SectionTruth]:
  """All sections of a ground-truth folder, sorted by machine then section.

  `release`: (year, "dev" or "eval"); the folder must then hold exactly that release's machine types, each with
  its sections (`asd_jax.data.releases`), else ValueError naming what is missing or unexpected.
  """
  data_dir = os.path.join(directory, GT_DATA)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"ground truth folder {directory} has no {GT_DATA}/ subfolder")
  keys = []
  for name in sorted(os.listdir(data_dir)):
    match = _GT_NAME.match(name)
    if match:
      keys.append((match["machine"], match["section"]))
  if not keys:
    raise FileNotFoundError(f"no ground_truth_<machine>_section_<ss>_test.csv files in {data_dir}")
  if release is not None:
    _check_release(data_dir, keys, release)
  has_attributes = os.path.isdir(os.path.join(directory, GT_ATTRIBUTES))
  truths = []
  for machine, section in sorted(keys):
    file_name = ground_truth_file_name(machine, section)
    label_path = os.path.join(data_dir, file_name)
    domain_path = os.path.join(directory, GT_DOMAIN, file_name)
    labels = read_named_values(label_path, integer=True)
    domains = read_named_values(domain_path, integer=True)
    if set(labels) != set(domains):
      raise ValueError(f"{label_path} and {domain_path} list different clips: "
                       f"{_describe_difference(set(labels), set(domains))}")
    full_to_short = {}
    if has_attributes:
      attr_path = os.path.join(directory, GT_ATTRIBUTES, file_name)
      for line_no, short, full in _read_rows(attr_path):
        if short not in labels:
          raise ValueError(f"{attr_path}:{line_no}: clip {short} is not in {label_path}")
        full_to_short[f"{full}.wav"] = short
    clips = sorted(labels)
    truths.append(SectionTruth(
        machine=machine, section=section, clips=clips,
        labels=np.array([labels[c] for c in clips], np.int64),
        domains=np.array([domains[c] for c in clips], np.int64),
        full_to_short=full_to_short,
    ))
  return truths


def _check_release(data_dir: str, keys: list[tuple[str, str]], release: tuple[int, str]) -> None:
  year, split = release
  expected = {f"{m} section {ss}" for m in releases.machines(year, split) for ss in releases.SECTIONS}
  found = {f"{m} section {ss}" for m, ss in keys}
  if found != expected:
    raise ValueError(f"{data_dir}: not the DCASE {year} {split} set: {_describe_difference(found, expected)}")


def _describe_difference(found: set[str], expected: set[str], limit: int = 5) -> str:
  missing = sorted(expected - found)
  extra = sorted(found - expected)
  parts = []
  if missing:
    parts.append(f"{len(missing)} missing ({', '.join(missing[:limit])}{', ...' if len(missing) > limit else ''})")
  if extra:
    parts.append(f"{len(extra)} unexpected ({', '.join(extra[:limit])}{', ...' if len(extra) > limit else ''})")
  return "; ".join(parts)


def read_submission_section(directory: str, truth: SectionTruth, *, decisions: bool = True,
                            seed: int | None = None, tag: str | None = None):
  """Scores [n] (and decisions [n] or None) of one section, in `truth.clips` order; the files are the plain or
  baseline-style ones (`section_files`, `seed` and `tag` as there)."""
  expected = set(truth.clips)
  out = []
  score_path, decision_path = section_files(directory, truth.machine, truth.section, seed=seed, tag=tag)
  paths = [score_path]
  if decisions:
    paths.append(decision_path)
  for path, integer in zip(paths, (False, True)):
    values = read_named_values(path, integer=integer, rename=truth.full_to_short)
    if set(values) != expected:
      raise ValueError(f"{path}: clips do not match the ground truth ({len(values)} rows, "
                       f"{len(expected)} expected): {_describe_difference(set(values), expected)}")
    out.append(np.array([values[c] for c in truth.clips]))
  return out[0], (out[1].astype(np.int64) if decisions else None)


def _clip_name(record: records_lib.ClipRecord) -> str:
  return os.path.basename(record.path)


def write_submission(
    directory: str,
    records: Sequence[records_lib.ClipRecord],
    scores: np.ndarray,
    decisions: np.ndarray,
) -> list[str]:
  """Writes the DCASE anomaly-score and decision files of a system.

  Args:
    directory: output folder (created).
    records: the test clips; clips are named by their wav file's base name.
    scores: [n] anomaly scores; decisions: [n] 0/1.

  Returns:
    The written paths.
  """
  scores = np.asarray(scores, np.float64)
  decisions = np.asarray(decisions)
  if scores.shape != (len(records),) or decisions.shape != (len(records),):
    raise ValueError(f"{len(records)} records, scores {scores.shape}, decisions {decisions.shape}")
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"non-finite scores for {[_clip_name(records[i]) for i in np.nonzero(~np.isfinite(scores))[0][:5]]}")
  if not np.all(np.isin(decisions, (0, 1))):
    raise ValueError("decisions must be 0 or 1")
  os.makedirs(directory, exist_ok=True)
  groups: dict[tuple[str, str], list[int]] = {}
  for i, r in enumerate(records):
    groups.setdefault((r.machine, r.section), []).append(i)
  written = []
  for (machine, section), idx in sorted(groups.items()):
    names = [_clip_name(records[i]) for i in idx]
    if len(set(names)) != len(names):
      dup = sorted({n for n in names if names.count(n) > 1})
      raise ValueError(f"{machine} section {section}: duplicate clip names {dup[:5]}")
    for file_name, column in ((score_file_name(machine, section), [repr(float(scores[i])) for i in idx]),
                              (decision_file_name(machine, section), [str(int(decisions[i])) for i in idx])):
      path = os.path.join(directory, file_name)
      rows = list(zip(names, column))
      atomic.write_with(path, lambda f, rows=rows: csv.writer(f, lineterminator="\n").writerows(rows))
      written.append(path)
  return written


def write_ground_truth(directory: str, records: Sequence[records_lib.ClipRecord]) -> list[str]:
  """Writes an official-style ground-truth folder from labelled test records (e.g. the dev set).

  Clips keep their file names; the attributes files map each name (without ".wav") to itself.
  """
  for sub in (GT_DATA, GT_DOMAIN, GT_ATTRIBUTES):
    os.makedirs(os.path.join(directory, sub), exist_ok=True)
  groups: dict[tuple[str, str], list[records_lib.ClipRecord]] = {}
  for r in records:
    if r.label not in (records_lib.NORMAL, records_lib.ANOMALY) or r.domain not in (records_lib.SOURCE, records_lib.TARGET):
      raise ValueError(f"{r.path}: ground truth needs a label and a domain, found label={r.label!r} domain={r.domain!r}")
    groups.setdefault((r.machine, r.section), []).append(r)
  written = []
  for (machine, section), recs in sorted(groups.items()):
    name = ground_truth_file_name(machine, section)
    rows = {
        GT_DATA: [(_clip_name(r), int(r.label == records_lib.ANOMALY)) for r in recs],
        GT_DOMAIN: [(_clip_name(r), int(r.domain == records_lib.TARGET)) for r in recs],
        GT_ATTRIBUTES: [(_clip_name(r), os.path.splitext(_clip_name(r))[0]) for r in recs],
    }
    for sub, content in rows.items():
      path = os.path.join(directory, sub, name)
      with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(content)
      written.append(path)
  return written
