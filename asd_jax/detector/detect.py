"""What `python -m asd_jax.detect` runs: new recordings scored by a detector folder (`detector.Detector`).

Inputs: wav files, and folders standing for every .wav file under them. Each recording must belong to a machine
type and section the detector was trained on. The machine type is the one given, else the nearest folder on the
file's path named like a known machine type (DCASE layout: `<machine>/test/<clip>.wav`); the section is the one
given, else the file name's (`data.filenames.section_of`: a DCASE name of any year, 2020's `id_<ss>` included, or
a `section_<ss>` / `id_<ss>` token in a recording named by hand). Every input is checked before anything is
scored: unreadable or missing files, unknown machine types or sections and recordings too short to score are all
listed in one `InputError`.

`detect` scores them (the maximum over each recording's clip-length windows, see `detector.Detector.score`);
`format_detections` is the printed table (file, machine, section, score, threshold, decision, windows, peak
window start, seconds dropped at the end, nearest normal training clip, then each window of a long recording,
then a `warning:` line for each recording whose channel count, sample rate or sample format the training clips
did not have; a recording the detector's channel policy cannot read is an input error, see `detector`); `run` is
the program's work: a warning per section whose normalisation rests on few training clips
(`scoring.scorer.few_clips_warning`), the table and the CSV files (`--output`: one row per recording,
`--windows_output`: one per window). The score histograms per section are the report's
(`report.histograms.write_detect_figures`, drawn from the detector `run`
loaded): the program calls it, so serving a detector needs neither matplotlib nor the report.
"""

from __future__ import annotations

import csv
import pathlib
import sys
from collections.abc import Sequence

from asd_jax.audio import wav as wavlib
from asd_jax.data import filenames
from asd_jax.detector import detector as detector_lib
from asd_jax.scoring import scorer as scorer_lib


class InputError(ValueError):
  """Problems with the recordings given to `detect`; `problems` has one line per file."""

  def __init__(self, problems: Sequence[str]):
    self.problems = list(problems)
    super().__init__(f"{len(self.problems)} problem(s) with the input:\n  " + "\n  ".join(self.problems))


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
  """`(wav paths, problems)`: files as given, folders replaced by their .wav files (sorted, recursive)."""
  paths, problems = [], []
  for item in inputs:
    p = pathlib.Path(item)
    if p.is_dir():
      found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() == ".wav" and f.is_file())
      if not found:
        problems.append(f"{item}: folder holds no .wav files")
      paths += found
    elif p.is_file():
      paths.append(str(p))
    else:
      problems.append(f"{item}: no such file or folder")
  return paths, problems


def infer_machine_section(path: str, machines: Sequence[str], machine: str = "", section: str = ""
                          ) -> tuple[str, str]:
  """(machine, section) of a clip: the given values, else from its path (see the module docstring).

  Raises ValueError saying what could not be told and how to pass it.
  """
  p = pathlib.Path(path)
  if not machine:
    machine = next((part for part in reversed(p.parent.parts) if part in machines), "")
    if not machine:
      raise ValueError(f"{path}: cannot tell the machine type from the path (no folder named one of "
                       f"{', '.join(machines)}); pass --machine")
  if not section:
    section = filenames.section_of(p.name)
    if section is None:
      raise ValueError(f"{path}: cannot tell the section from the file name (expected a DCASE name, or "
                       "'section_<ss>' or 'id_<ss>' in it); pass --section")
  return machine, section


def check_inputs(detector: detector_lib.Detector, paths: Sequence[str], machine: str = "", section: str = ""):
  """`(machines, sections, windows)` of `paths` (`windows`: each recording read by `detector.read`); raises
  `InputError` listing every file that cannot be scored."""
  machines, sections, windows, problems = [], [], [], []
  for path in paths:
    try:
      m, s = infer_machine_section(path, detector.machines, machine, section)
      detector.check_section(m, s)
      w = detector.read(path)
    except detector_lib.DetectorError:  # the detector's own files: not a problem of this recording
      raise
    except (ValueError, wavlib.WavError) as e:
      problems.append(str(e) if str(e).startswith(path) else f"{path}: {e}")
      continue
    machines.append(m)
    sections.append(s)
    windows.append(w)
  if problems:
    raise InputError(problems)
  return machines, sections, windows


def _table(rows: Sequence[Sequence[str]]) -> str:
  """Columns padded to their widest cell, the last one left as it is."""
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def _decision(value: int) -> str:
  return "anomalous" if value else "normal"


def score_text(value: float) -> str:
  """A score or threshold as printed: four significant digits, so that neither 1e-5 nor 1e4 rounds to zero."""
  return f"{value:.4g}"


MAX_LISTED = 20  # recordings listed by name under one warning


def format_warnings(detections) -> str:
  """The `warning:` block of the recordings whose format the detector's training clips did not have ("" when
  none): one line per recording, at most `MAX_LISTED`, then how many more."""
  unlike = [d for d in detections if d.warning]
  if not unlike:
    return ""
  lines = [f"warning: {len(unlike)} recording(s) unlike the detector's training clips; their scores may not be "
           "comparable with the thresholds, which were fitted on those clips:"]
  lines += [f"  {d.path}: {d.warning}" for d in unlike[:MAX_LISTED]]
  if len(unlike) > MAX_LISTED:
    lines.append(f"  ... and {len(unlike) - MAX_LISTED} more")
  return "\n".join(lines)


def format_detections(detections, clip_seconds: float | None = None, channels: str = "") -> str:
  """A plain-text table: file, machine, section, score (max over windows), threshold, decision, windows, peak
  window start, the seconds at the end that were not scored, nearest normal clip; a line saying so when a
  recording's end was not scored; then, per recording of several windows, each window's score; then the warnings
  of recordings unlike the training clips (`format_warnings`). Scores and thresholds in `score_text`'s form.
  `channels`: the channel policy the recordings were read with, named in the heading."""
  rows = [("file", "machine", "section", "score", "threshold", "decision", "windows", "peak (s)", "dropped (s)",
           "nearest normal training clip")]
  for d in detections:
    rows.append((d.path, d.machine, d.section, score_text(d.score), score_text(d.threshold), _decision(d.decision),
                 str(max(len(d.windows), 1)), f"{d.peak_s:.2f}", f"{d.dropped_s:.2f}" if d.dropped_s else "0",
                 d.nearest_train_clip))
  clip = f" of {clip_seconds:g} s" if clip_seconds else ""
  read = f"; read with channel policy {channels!r}" if channels else ""
  parts = [f"score: the maximum over each recording's windows{clip} (peak: the most anomalous window's start){read}",
           _table(rows)]
  dropped = [d for d in detections if d.dropped_s]
  if dropped:
    parts.append(f"dropped: {len(dropped)} recording(s) end in a part shorter than half a window{clip}, which is in "
                 "no window and was not scored (its seconds in 'dropped (s)'); an anomaly only there is missed")
  for d in detections:
    if len(d.windows) <= 1:
      continue
    dropped = f"; the last {d.dropped_s:.2f} s is in no window (under half a clip)" if d.dropped_s else ""
    window_rows = [("start (s)", "end (s)", "score", "decision", "nearest normal training clip")]
    window_rows += [(f"{w.start_s:.2f}", f"{w.start_s + w.length_s:.2f}", score_text(w.score),
                     _decision(w.decision), w.nearest_train_clip) for w in d.windows]
    parts.append(f"\n{d.path}: {len(d.windows)} windows{dropped}\n" + _table(window_rows))
  warnings = format_warnings(detections)
  if warnings:
    parts.append("\n" + warnings)
  return "\n".join(parts)


def detect(detector: str | detector_lib.Detector, inputs: Sequence[str], *, machine: str = "",
           section: str = "") -> list[detector_lib.Detection]:
  """Scores the wav files (or folders) `inputs` with `detector` (a detector folder, or a loaded
  `detector.Detector`); returns one `detector.Detection` per file."""
  paths, problems = expand_inputs(inputs)
  if problems:
    raise InputError(problems)
  if not paths:
    raise InputError(["no input files given"])
  if isinstance(detector, str):
    detector = detector_lib.Detector(detector)
  machines, sections, windows = check_inputs(detector, paths, machine, section)
  return detector.score(paths, machines, sections, windows=windows)


def run(detector_dir: str, inputs: Sequence[str], *, machine: str = "", section: str = "", output: str = "",
        windows_output: str = "") -> tuple[detector_lib.Detector, list[detector_lib.Detection]]:
  """What `python -m asd_jax.detect` does besides its figures: checks, loads the detector once, scores, prints,
  writes the CSVs; returns the loaded detector (the figures are drawn from it) and the Detections."""
  paths, problems = expand_inputs(inputs)
  if problems:
    raise InputError(problems)
  detector = detector_lib.Detector(detector_dir)
  detections = detect(detector, paths, machine=machine, section=section)
  for key in sorted({(d.machine, d.section) for d in detections}):
    line = scorer_lib.few_clips_warning(*key, detector.training_clips(*key))
    if line:
      print(f"warning: {line}", file=sys.stderr)
  print(format_detections(detections, detector.wav_config.duration_s, detector.wav_config.channels))
  if output:
    _write_csv(output, ["file", "machine", "section", "score", "threshold", "decision", "nearest_train_clip",
                        "windows", "peak_s", "dropped_s"],
               [(d.path, d.machine, d.section, repr(d.score), repr(d.threshold), d.decision, d.nearest_train_clip,
                 len(d.windows), repr(d.peak_s), repr(d.dropped_s)) for d in detections])
  if windows_output:
    _write_csv(windows_output, ["file", "machine", "section", "window", "start_s", "length_s", "score",
                                "threshold", "decision", "nearest_train_clip"],
               [(d.path, d.machine, d.section, i, repr(w.start_s), repr(w.length_s), repr(w.score), repr(d.threshold),
                 w.decision, w.nearest_train_clip) for d in detections for i, w in enumerate(d.windows)])
  return detector, detections


def _write_csv(path: str, header: Sequence[str], rows) -> None:
  """`rows` under `header` as CSV (a result for the user: no later run reads it)."""
  with open(path, "w", newline="") as out:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


