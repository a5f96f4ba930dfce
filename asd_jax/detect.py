r"""Scores new recordings with a trained system: the detector folder the pipeline exports (the program; the
work is `asd_jax.detector.Detector`).

  python -m asd_jax.detect --system WORKDIR/detector clip.wav [more.wav | folder ...] \
      [--machine=fan] [--section=00] [--output=scores.csv] [--windows_output=windows.csv] [--plot_dir=DIR]

Each recording must belong to a machine type and section the system was trained on. The machine type is
`--machine`, else the nearest folder on the file's path named like a known machine type (DCASE layout:
`<machine>/test/<clip>.wav`); the section is `--section`, else the `section_<ss>` in the file name. A folder
argument stands for every .wav file under it. Per file, prints the fused anomaly score, the decision
against the section's fitted threshold ("anomalous" when the score is above it), and the nearest normal
training clip (relative to the training dataset root). Every input is checked before anything is scored:
unreadable or missing files, unknown machine types or sections and recordings too short to score are all
listed in one error.

A recording is scored over all of it (`asd_jax.audio.windows`): consecutive windows of the models' clip length
(the last, partial window repeat-padded like a short clip when it is at least half a clip long, dropped
otherwise), each scored as a clip. The recording's score is the MAXIMUM over its windows, its decision is
"anomalous" when any window is above the threshold, and "peak (s)" is the start time of the most anomalous
window; recordings of more than one window also get a table of every window's score (and `--windows_output`
writes them as CSV). A recording of exactly one clip length is one window. Shorter recordings are padded to
one window: below half the clip length with a warning naming them, below a tenth an error naming them.

`--plot_dir=DIR` also writes, per section scored, `DIR/scores_<machine>_section_<ss>.png`: where the recordings'
scores fall against the section's normal training scores (fused with the system's weights, as its threshold
was fitted on them) and its threshold (`asd_jax.report.histograms.detect_figure`; needs matplotlib, the
`[report]` extra). They are drawn from the detector already loaded for scoring: nothing is reloaded.
"""

from __future__ import annotations

import csv
import os
import pathlib
import re
from collections.abc import Sequence

from absl import app, flags

from asd_jax import cli
from asd_jax.audio import wav as wavlib

_SECTION = re.compile(r"(?:^|_)section_(\d\d)(?:_|\.|$)")


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
    match = _SECTION.search(p.name)
    if not match:
      raise ValueError(f"{path}: cannot tell the section from the file name (expected 'section_<ss>'); "
                       "pass --section")
    section = match.group(1)
  return machine, section


def check_inputs(detector, paths: Sequence[str], machine: str = "", section: str = ""):
  """`(machines, sections, windows)` of `paths` (`windows`: each recording read by `detector.read`); raises
  `InputError` listing every file that cannot be scored."""
  machines, sections, windows, problems = [], [], [], []
  for path in paths:
    try:
      m, s = infer_machine_section(path, detector.machines, machine, section)
      detector.check_section(m, s)
      w = detector.read(path)
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


def format_detections(detections, clip_seconds: float | None = None) -> str:
  """A plain-text table: file, machine, section, score (max over windows), threshold, decision, windows, peak
  window start, nearest normal clip; then, per recording of several windows, each window's score."""
  rows = [("file", "machine", "section", "score", "threshold", "decision", "windows", "peak (s)",
           "nearest normal training clip")]
  for d in detections:
    rows.append((d.path, d.machine, d.section, f"{d.score:.4f}", f"{d.threshold:.4f}", _decision(d.decision),
                 str(max(len(d.windows), 1)), f"{d.peak_s:.2f}", d.nearest_train_clip))
  clip = f" of {clip_seconds:g} s" if clip_seconds else ""
  parts = [f"score: the maximum over each recording's windows{clip} (peak: the most anomalous window's start)",
           _table(rows)]
  for d in detections:
    if len(d.windows) <= 1:
      continue
    dropped = f"; the last {d.dropped_s:.2f} s is in no window (under half a clip)" if d.dropped_s else ""
    window_rows = [("start (s)", "end (s)", "score", "decision", "nearest normal training clip")]
    window_rows += [(f"{w.start_s:.2f}", f"{w.start_s + w.length_s:.2f}", f"{w.score:.4f}", _decision(w.decision),
                     w.nearest_train_clip) for w in d.windows]
    parts.append(f"\n{d.path}: {len(d.windows)} windows{dropped}\n" + _table(window_rows))
  return "\n".join(parts)


def detect(system, inputs: Sequence[str], *, machine: str = "", section: str = ""):
  """Scores the wav files (or folders) `inputs` with `system` (a detector folder, or a loaded
  `detector.Detector`); returns one `detector.Detection` per file."""
  paths, problems = expand_inputs(inputs)
  if problems:
    raise InputError(problems)
  if not paths:
    raise InputError(["no input files given"])
  if isinstance(system, str):
    from asd_jax import detector as detector_lib  # JAX is imported only once the arguments are known to be usable.

    system = detector_lib.Detector(system)
  machines, sections, windows = check_inputs(system, paths, machine, section)
  return system.score(paths, machines, sections, windows=windows)


def _plotting():
  """The report's histogram module, or ValueError saying how to install matplotlib."""
  try:
    from asd_jax.report import histograms, style  # pylint: disable=g-import-not-at-top  (an extra)
  except ImportError as e:
    raise ValueError(f"--plot_dir needs matplotlib: pip install 'asd_jax[report]' ({e})") from e
  return histograms, style


def write_histograms(system, detections, out_dir: str) -> list[str]:
  """Per (machine, section) of `detections`, a PNG of their scores against the section's fused normal
  training scores and threshold (`system`: the loaded `detector.Detector` that scored them, whose stored
  training scores are drawn; nothing is reloaded); returns the paths."""
  histograms, style = _plotting()
  os.makedirs(out_dir, exist_ok=True)
  by_section: dict[tuple[str, str], list] = {}
  for d in detections:
    by_section.setdefault((d.machine, d.section), []).append(d)
  paths = []
  for (machine, section), chosen in sorted(by_section.items()):
    train = system.train_scores[(machine, section)]
    fig = histograms.detect_figure(f"{machine} section {section} ({system.system})", train,
                                   system.thresholds[(machine, section)], [d.score for d in chosen],
                                   new_names=[os.path.basename(d.path) for d in chosen])
    paths.append(style.save_png(fig, os.path.join(out_dir, f"scores_{machine}_section_{section}.png")))
  return paths


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.embed.define_flags`)."""
  flags.DEFINE_string("system", None, "Detector folder written by the pipeline (WORKDIR/detector).")
  flags.DEFINE_string("machine", "", "Machine type of every input (default: from each path).")
  flags.DEFINE_string("section", "", "Two-digit section of every input (default: from each file name).")
  flags.DEFINE_string("output", "", "Also write the results as CSV to this file (one row per recording; its "
                      "score is the maximum over its windows).")
  flags.DEFINE_string("windows_output", "", "Also write every window's score as CSV to this file (one row per "
                      "window of the clip length).")
  flags.DEFINE_string("plot_dir", "", "Also write a score histogram per section scored to this folder (needs "
                      "the [report] extra).")
  flags.mark_flags_as_required(["system"])


def run(system_dir: str, inputs: Sequence[str], *, machine: str = "", section: str = "", output: str = "",
        windows_output: str = "", plot_dir: str = "") -> list:
  """The program without its flags: checks, loads the detector once, scores, prints, writes the CSVs and the
  histograms (drawn from the same loaded detector); returns the Detections."""
  if plot_dir:
    _plotting()  # fail before scoring when matplotlib is missing
  paths, problems = expand_inputs(inputs)
  if problems:
    raise InputError(problems)
  from asd_jax import detector as detector_lib  # pylint: disable=g-import-not-at-top  (JAX: after the checks)

  system = detector_lib.Detector(system_dir)
  detections = detect(system, paths, machine=machine, section=section)
  print(format_detections(detections, system.wav_config.duration_s))
  if plot_dir:
    for path in write_histograms(system, detections, plot_dir):
      print(f"histogram: {path}")
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
  return detections


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more .wav files or folders to score")
  cli.quiet_by_default()
  f = flags.FLAGS
  run(f.system, argv[1:], machine=f.machine, section=f.section, output=f.output, windows_output=f.windows_output,
      plot_dir=f.plot_dir)


def _write_csv(path: str, header: Sequence[str], rows) -> None:
  with open(path, "w", newline="") as out:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; bad input exits with "error: <message>" and status 1
