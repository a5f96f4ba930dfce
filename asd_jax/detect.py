r"""Scores new recordings with a trained system: the detector folder the pipeline exports (the program; the
work is `asd_jax.detector.Detector`).

  python -m asd_jax.detect --system WORKDIR/detector clip.wav [more.wav | folder ...] \
      [--machine=fan] [--section=00] [--output=scores.csv]

Each recording must belong to a machine type and section the system was trained on. The machine type is
`--machine`, else the nearest folder on the file's path named like a known machine type (DCASE layout:
`<machine>/test/<clip>.wav`); the section is `--section`, else the `section_<ss>` in the file name. A folder
argument stands for every .wav file under it. Per file, prints the fused anomaly score, the decision
against the section's fitted threshold ("anomalous" when the score is above it), and the nearest normal
training clip (relative to the training dataset root). Every input is checked before anything is scored:
unreadable or missing files and unknown machine types or sections are all listed in one error.

`--plot_dir=DIR` also writes, per section scored, `DIR/scores_<machine>_section_<ss>.png`: where the recordings
fall against the section's normal training scores (fused with the system's weights) and its threshold
(`asd_jax.report.histograms.detect_figure`; needs matplotlib, the `[report]` extra).
"""

from __future__ import annotations

import csv
import os
import pathlib
import re
from collections.abc import Sequence

from absl import app, flags, logging

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


def check_inputs(detector, paths: Sequence[str], machine: str = "", section: str = ""
                 ) -> tuple[list[str], list[str]]:
  """Machines and sections of `paths`; raises `InputError` listing every file that cannot be scored."""
  machines, sections, problems = [], [], []
  for path in paths:
    try:
      m, s = infer_machine_section(path, detector.machines, machine, section)
      detector.check_section(m, s)
      wavlib.load_wav(path, duration_s=None)
    except (ValueError, wavlib.WavError) as e:
      problems.append(str(e) if str(e).startswith(path) else f"{path}: {e}")
      continue
    machines.append(m)
    sections.append(s)
  if problems:
    raise InputError(problems)
  return machines, sections


def format_detections(detections) -> str:
  """A plain-text table: file, machine, section, score, threshold, decision, nearest normal clip."""
  rows = [("file", "machine", "section", "score", "threshold", "decision", "nearest normal training clip")]
  for d in detections:
    rows.append((d.path, d.machine, d.section, f"{d.score:.4f}", f"{d.threshold:.4f}",
                 "anomalous" if d.decision else "normal", d.nearest_train_clip))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def detect(system_dir: str, inputs: Sequence[str], *, machine: str = "", section: str = ""):
  """Loads the detector in `system_dir` and scores the wav files (or folders) `inputs`; returns Detections."""
  from asd_jax import detector as detector_lib  # JAX is imported only once the arguments are known to be usable.

  paths, problems = expand_inputs(inputs)
  if problems:
    raise InputError(problems)
  if not paths:
    raise InputError(["no input files given"])
  detector = detector_lib.Detector(system_dir)
  machines, sections = check_inputs(detector, paths, machine, section)
  return detector.score(paths, machines, sections)


def _plotting():
  """The report's histogram module, or ValueError saying how to install matplotlib."""
  try:
    from asd_jax.report import histograms, style  # pylint: disable=g-import-not-at-top  (an extra)
  except ImportError as e:
    raise ValueError(f"--plot_dir needs matplotlib: pip install 'asd_jax[report]' ({e})") from e
  return histograms, style


def write_histograms(system, detections, out_dir: str) -> list[str]:
  """Per (machine, section) of `detections`, a PNG of their scores against the section's fused normal
  training scores and threshold (`system`: a loaded `detector.Detector`); returns the paths."""
  histograms, style = _plotting()
  os.makedirs(out_dir, exist_ok=True)
  by_section: dict[tuple[str, str], list] = {}
  for d in detections:
    by_section.setdefault((d.machine, d.section), []).append(d)
  paths = []
  for (machine, section), chosen in sorted(by_section.items()):
    train = sum(w * system.scorers[k].sections[(machine, section)].train_scores
                for k, w in system.weights.items() if w)
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
  flags.DEFINE_string("output", "", "Also write the results as CSV to this file.")
  flags.DEFINE_string("plot_dir", "", "Also write a score histogram per section scored to this folder (needs "
                      "the [report] extra).")
  flags.mark_flags_as_required(["system"])


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more .wav files or folders to score")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  if f.plot_dir:
    _plotting()  # fail before scoring when matplotlib is missing
  detections = detect(f.system, argv[1:], machine=f.machine, section=f.section)
  print(format_detections(detections))
  if f.plot_dir:
    from asd_jax import detector as detector_lib  # pylint: disable=g-import-not-at-top

    for path in write_histograms(detector_lib.Detector(f.system), detections, f.plot_dir):
      print(f"histogram: {path}")
  if f.output:
    with open(f.output, "w", newline="") as out:
      w = csv.writer(out, lineterminator="\n")
      w.writerow(["file", "machine", "section", "score", "threshold", "decision", "nearest_train_clip"])
      w.writerows((d.path, d.machine, d.section, repr(d.score), repr(d.threshold), d.decision,
                   d.nearest_train_clip) for d in detections)


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; bad input exits with "error: <message>" and status 1
