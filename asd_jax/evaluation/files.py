"""DCASE Task 2 submission and ground-truth files.

Submission folder (one pair per machine type and section), rows `clip.wav,score` and `clip.wav,0|1`:
  2022-2026  anomaly_score_<machine>_section_<ss>_test.csv, decision_result_<machine>_section_<ss>_test.csv
  2021       anomaly_score_<machine>_section_<ss>_<source|target>_test.csv (one per domain), decision_result_...
  2020       anomaly_score_<machine>_id_<ID>.csv (decision_result_<machine>_id_<ID>.csv: the project's; 2020 had none)
(the names each year's baseline wrote and its evaluator reads). For 2022-2026 the official baseline's own names
are read too (`section_files`):
  anomaly_score_DCASE<year>T2<machine>_section_<ss>_test_seed<seed><tag>_Eval.csv    (and decision_result_...)
e.g. `anomaly_score_DCASE2026T2ToyCarEmu_section_00_test_seed13711_id(0_)_Eval.csv`; the machine name is matched
whole (ToyCar does not take ToyCarEmu's files), a folder holding several baseline runs of one section (seeds,
tags) must say which (`seed`, `tag`), and the plain name wins over a baseline name. `write_submission` writes the names of the
protocol it is given; the readers take a year's own names, or the 2022+ names for any year.
Ground-truth folder, as in the official 2022-2025 evaluators (`write_ground_truth` writes it for any year):
  ground_truth_data/ground_truth_<machine>_section_<ss>_test.csv        `clip.wav,0|1` (1 = anomalous)
  ground_truth_domain/ground_truth_<machine>_section_<ss>_test.csv      `clip.wav,0|1` (1 = target)
  ground_truth_attributes/ground_truth_<machine>_section_<ss>_test.csv  `clip.wav,<full dev name>`
The 2021 evaluator's ground truth is also read: `ground_truth_data/ground_truth_<machine>_section_<ss>_<source|
target>_test.csv` (`clip.wav,0|1`, the domain in the file name, no ground_truth_domain/), and the 2020 one, a single
file `eval_data_list.csv`: a one-field row names a machine type, the rows below it are `clip.wav,<any>,0|1`
(y-kawagu/dcase2020_task2_evaluator, evaluator.py: MACHINE_TYPE_COL 0, FILENAME_COL 0, Y_TRUE_COL 2); the machine
ID is the `id_XX` in the clip's name.
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
from asd_jax.evaluation.protocol import Protocol

GT_DATA = "ground_truth_data"
GT_DOMAIN = "ground_truth_domain"
GT_ATTRIBUTES = "ground_truth_attributes"
_GT_NAME = re.compile(r"^ground_truth_(?P<machine>.+)_section_(?P<section>\d\d)_test\.csv$")
_GT_NAME_2021 = re.compile(  # the 2021 evaluator's: one file per section and domain
    r"^ground_truth_(?P<machine>.+)_section_(?P<section>\d\d)_(?P<domain>source|target)_test\.csv$")


def score_file_name(machine: str, section: str) -> str:
  return f"anomaly_score_{machine}_section_{section}_test.csv"


def decision_file_name(machine: str, section: str) -> str:
  return f"decision_result_{machine}_section_{section}_test.csv"


def ground_truth_file_name(machine: str, section: str) -> str:
  return f"ground_truth_{machine}_section_{section}_test.csv"


def submission_file_names(machine: str, section: str, protocol: Protocol) -> list[tuple[str, str, str | None]]:
  """(anomaly-score file, decision file, domain or None) of one section in `protocol`'s own naming: one pair per
  domain for 2021; for 2020 (whose evaluator reads no decisions) the decision file is named like its score file."""
  if protocol is Protocol.DCASE2020:
    return [(f"anomaly_score_{machine}_id_{section}.csv", f"decision_result_{machine}_id_{section}.csv", None)]
  if protocol is Protocol.DCASE2021:
    return [(f"anomaly_score_{machine}_section_{section}_{d}_test.csv",
             f"decision_result_{machine}_section_{section}_{d}_test.csv", d)
            for d in (records_lib.SOURCE, records_lib.TARGET)]
  return [(score_file_name(machine, section), decision_file_name(machine, section), None)]


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
  """Ground truth of one section: clip names (sorted), labels and domains (0/1), name map; `per_domain_files`
  when it was read from the 2021 evaluator's per-domain files."""

  machine: str
  section: str
  clips: list[str]
  labels: np.ndarray
  domains: np.ndarray
  full_to_short: dict[str, str]
  per_domain_files: bool = False


def read_ground_truth(directory: str, *, release: tuple[int, str] | None = None) -> list[SectionTruth]:
  """All sections of a ground-truth folder (2022+ form, or the 2021 evaluator's) or of the 2020 evaluator's
  `eval_data_list.csv` (a file), sorted by machine then section.

  `release`: (year, "dev" or "eval"); a 2022+ folder must then hold exactly that release's machine types, each with
  its sections (`asd_jax.data.releases`), else ValueError naming what is missing or unexpected.
  """
  if os.path.isfile(directory):
    return _read_eval_data_list_2020(directory)
  data_dir = os.path.join(directory, GT_DATA)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"ground truth folder {directory} has no {GT_DATA}/ subfolder")
  keys, keys_2021 = [], []
  for name in sorted(os.listdir(data_dir)):
    if match := _GT_NAME.match(name):
      keys.append((match["machine"], match["section"]))
    elif match := _GT_NAME_2021.match(name):
      keys_2021.append((match["machine"], match["section"], match["domain"]))
  if keys and keys_2021:
    raise ValueError(f"{data_dir} mixes per-section files (e.g. {ground_truth_file_name(*keys[0])}) with the 2021 "
                     f"per-domain ones (e.g. ground_truth_{keys_2021[0][0]}_section_{keys_2021[0][1]}_"
                     f"{keys_2021[0][2]}_test.csv)")
  if keys_2021:
    return _read_ground_truth_2021(data_dir, keys_2021)
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


def _read_ground_truth_2021(data_dir: str, keys: Sequence[tuple[str, str, str]]) -> list[SectionTruth]:
  """Sections of the 2021 evaluator's ground truth: one `clip,0|1` file per section and domain."""
  by_section: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
  for machine, section, domain in sorted(keys):
    path = os.path.join(data_dir, f"ground_truth_{machine}_section_{section}_{domain}_test.csv")
    clips = by_section.setdefault((machine, section), {})
    for clip, label in read_named_values(path, integer=True).items():
      if clip in clips:
        raise ValueError(f"{path}: clip {clip} is also listed in the other domain's file")
      clips[clip] = (int(label), int(domain == records_lib.TARGET))
  truths = []
  for (machine, section), clips in sorted(by_section.items()):
    names = sorted(clips)
    truths.append(SectionTruth(
        machine=machine, section=section, clips=names,
        labels=np.array([clips[c][0] for c in names], np.int64),
        domains=np.array([clips[c][1] for c in names], np.int64),
        full_to_short={}, per_domain_files=True))
  return truths


_ID_2020 = re.compile(r"(?:^|_)id_(\d\d)_")


def _read_eval_data_list_2020(path: str) -> list[SectionTruth]:
  """Sections (machine IDs) of the 2020 evaluator's ground truth list (see the module docstring)."""
  by_id: dict[tuple[str, str], dict[str, int]] = {}
  machine = None
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f, strict=True)
      for row in reader:
        cells = [c.strip() for c in row]
        if not any(cells):
          continue
        if len(cells) < 2:
          machine = cells[0]
          continue
        where = f"{path}:{reader.line_num}"
        if machine is None:
          raise ValueError(f"{where}: a clip row before any machine type row")
        if len(cells) < 3 or cells[2] not in ("0", "1"):
          raise ValueError(f"{where}: expected 'clip.wav,<any>,0|1', found {','.join(row)!r}")
        found = _ID_2020.search(cells[0])
        if not found:
          raise ValueError(f"{where}: clip {cells[0]} has no machine ID (id_XX) in its name")
        clips = by_id.setdefault((machine, found[1]), {})
        if cells[0] in clips:
          raise ValueError(f"{where}: clip {cells[0]} listed twice for {machine}")
        clips[cells[0]] = int(cells[2])
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not a UTF-8 text CSV file (undecodable byte at offset {e.start})") from None
  except csv.Error as e:
    raise ValueError(f"{path}: not a readable CSV file ({e})") from None
  if not by_id:
    raise ValueError(f"{path}: no clip rows (expected the 2020 evaluator's eval_data_list.csv)")
  return [SectionTruth(machine=m, section=i, clips=sorted(clips),
                       labels=np.array([clips[c] for c in sorted(clips)], np.int64),
                       domains=np.zeros(len(clips), np.int64), full_to_short={})
          for (m, i), clips in sorted(by_id.items())]


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


def read_scores(directory: str, machine: str, section: str, clips: Sequence[str], *,
                decisions: bool = True, protocol: Protocol = Protocol.DCASE2022,
                rename: dict[str, str] | None = None, seed: int | None = None, tag: str | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
  """Scores [n] (and decisions [n], or None) of one section's `clips`, in their order, from `protocol`'s own file
  names (`submission_file_names`; 2021: both domains' files together) or else another year's (a submission keeps
  its names when evaluated under another year's rules). 2020 reads no decisions: None. Clips are renamed through
  `rename` (full dev names to short ones) where listed. The 2022+ naming also takes the official
  baseline's names (`section_files`, `seed` and `tag` as there).

  Raises:
    FileNotFoundError: naming the files looked for. ValueError: naming the file, for clips that do not match
      `clips` (missing, unexpected, listed twice) and for bad rows (see `read_named_values`).
  """
  expected = set(clips)
  namings = [_resolved_names(directory, machine, section, p, seed, tag)
             for p in [protocol] + [p for p in Protocol if p != protocol]]
  chosen = next((n for n in namings if all(os.path.isfile(os.path.join(directory, f)) for f, _, _ in n)), None)
  if chosen is None:
    others = "; ".join(" and ".join(f for f, _, _ in n) for n in namings[1:])
    raise FileNotFoundError(f"missing file: {os.path.join(directory, namings[0][0][0])} (nor another year's name "
                            f"for it: {others})")
  read_decisions = decisions and protocol is not Protocol.DCASE2020
  columns = [0, 1] if read_decisions else [0]
  out = []
  for column in columns:
    values, paths = {}, []
    for files_of_domain in chosen:
      path = os.path.join(directory, files_of_domain[column])
      paths.append(path)
      part = read_named_values(path, integer=column == 1, rename=rename)
      twice = sorted(set(part) & set(values))
      if twice:
        raise ValueError(f"{path}: clip {twice[0]} is also listed in {paths[0]}")
      values.update(part)
    if set(values) != expected:
      raise ValueError(f"{' + '.join(paths)}: clips do not match the ground truth ({len(values)} rows, "
                       f"{len(expected)} expected): {_describe_difference(set(values), expected)}")
    out.append(np.array([values[c] for c in clips]))
  return out[0], (out[1].astype(np.int64) if read_decisions else None)


def read_submission_section(directory: str, truth: SectionTruth, *, decisions: bool = True,
                            protocol: Protocol = Protocol.DCASE2022, seed: int | None = None, tag: str | None = None):
  """Scores [n] (and decisions [n] or None) of one section, in `truth.clips` order (see `read_scores`)."""
  return read_scores(directory, truth.machine, truth.section, truth.clips, decisions=decisions, protocol=protocol,
                     rename=truth.full_to_short, seed=seed, tag=tag)


def _resolved_names(directory: str, machine: str, section: str, protocol: Protocol, seed: int | None,
                    tag: str | None) -> list[tuple[str, str, str | None]]:
  """`submission_file_names`, with the 2022+ pair resolved to a baseline-style pair where only that exists."""
  names = submission_file_names(machine, section, protocol)
  if protocol in (Protocol.DCASE2020, Protocol.DCASE2021):
    return names
  score, decision = section_files(directory, machine, section, seed=seed, tag=tag)
  return [(os.path.basename(score), os.path.basename(decision), None)]


def _clip_name(record: records_lib.ClipRecord) -> str:
  return os.path.basename(record.path)


def write_submission(
    directory: str,
    records: Sequence[records_lib.ClipRecord],
    scores: np.ndarray,
    decisions: np.ndarray,
    *,
    protocol: Protocol = Protocol.DCASE2022,
) -> list[str]:
  """Writes the DCASE anomaly-score and decision files of a system, named as `protocol`'s year named them
  (`submission_file_names`).

  Args:
    directory: output folder (created).
    records: the test clips; clips are named by their wav file's base name.
    scores: [n] anomaly scores; decisions: [n] 0/1.
    protocol: whose file names (2021: one pair of files per domain; every record needs its domain).

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
    for score_name, decision_name, domain in submission_file_names(machine, section, protocol):
      if domain is not None:
        stray = [records[i] for i in idx if records[i].domain not in (records_lib.SOURCE, records_lib.TARGET)]
        if stray:
          raise ValueError(f"{stray[0].path}: the {protocol.title} files are per domain, but the clip's domain is "
                           f"{stray[0].domain!r}")
      mine = [(n, i) for n, i in zip(names, idx) if domain is None or records[i].domain == domain]
      for file_name, column in ((score_name, [repr(float(scores[i])) for _, i in mine]),
                                (decision_name, [str(int(decisions[i])) for _, i in mine])):
        path = os.path.join(directory, file_name)
        rows = list(zip([n for n, _ in mine], column))
        atomic.write_with(path, lambda f, rows=rows: csv.writer(f, lineterminator="\n").writerows(rows))
        written.append(path)
  return written


def write_ground_truth(directory: str, records: Sequence[records_lib.ClipRecord]) -> list[str]:
  """Writes a ground-truth folder in the 2022+ evaluators' form (see the module docstring) from labelled test
  records, e.g. a development set's test clips, whose names carry label and domain; any year's records (2020 ones
  are all source domain). `evaluate --ground_truth=DIR` reads it; `evaluate --dataset=ROOT` reads the labels from
  the dataset's names directly and needs no such folder.

  Clips keep their file names; the attributes files map each name (without ".wav") to itself.

  Raises:
    ValueError: naming the first clip without a label or a domain (an evaluation set's).
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
