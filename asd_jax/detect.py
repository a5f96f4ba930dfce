r"""Scores new recordings with a trained system's detector, the folder the pipeline exports (the program; the
work is `asd_jax.detector.detect`).

  python -m asd_jax.detect --detector WORKDIR/detector clip.wav [more.wav | folder ...] \
      [--machine=fan] [--section=00] [--output=scores.csv] [--windows_output=windows.csv] [--plot_dir=DIR]

Each recording must belong to a machine type and section the system was trained on. The machine type is
`--machine`, else the nearest folder on the file's path named like a known machine type (DCASE layout:
`<machine>/test/<clip>.wav`); the section is `--section`, else the file name's: a DCASE name of any year (2020's
`id_<ss>` too), or a `section_<ss>` or `id_<ss>` in a recording named by hand. A folder
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

Channels and formats. A recording is read as the detector's models read their training clips: resampled to
their rate, and turned into one waveform by their channel policy (`data.channels`, recorded in the detector;
`asd_jax.audio.channels`): `near` channel 0 (a mono file: its channel), `far` channel 1, `mean` the mean of the
channels, `cancel` the near channel (0) less what the far one (1) predicts, per frequency. `far` and `cancel`
need two-channel near/far recordings (DCASE 2026): given a mono or an 8-channel file they are an error naming
it. A recording whose channel count, sample rate or sample format the training clips did not have (an
8-channel MIMII clip against a detector trained on mono DCASE clips) is scored, and a `warning:` line after the
table names it and what differs: its score may not be comparable with the threshold fitted on those clips.

`--plot_dir=DIR` also writes, per section scored, `DIR/scores_<machine>_section_<ss>.png`: where the recordings'
scores fall against the section's normal training scores (fused with the system's weights, as its threshold
was fitted on them) and its threshold (`asd_jax.report.histograms.write_detect_figures`; needs matplotlib, the
`[report]` extra). They are drawn from the detector already loaded for scoring: nothing is reloaded.
"""

from __future__ import annotations

from absl import app, flags

from asd_jax import cli
from asd_jax.detector import detect


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.cli`)."""
  flags.DEFINE_string("detector", None, "Detector folder written by the pipeline (WORKDIR/detector).")
  flags.DEFINE_string("machine", "", "Machine type of every input (default: from each path).")
  flags.DEFINE_string("section", "", "Two-digit section of every input (default: from each file name).")
  flags.DEFINE_string("output", "", "Also write the results as CSV to this file (one row per recording; its "
                      "score is the maximum over its windows).")
  flags.DEFINE_string("windows_output", "", "Also write every window's score as CSV to this file (one row per "
                      "window of the clip length).")
  flags.DEFINE_string("plot_dir", "", "Also write a score histogram per section scored to this folder (needs "
                      "the [report] extra).")
  flags.mark_flags_as_required(["detector"])


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more .wav files or folders to score")
  cli.quiet_by_default()
  f = flags.FLAGS
  if f.plot_dir:  # the report's figures (the [report] extra): refused before anything is scored when missing
    try:
      from asd_jax.report import histograms  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError(f"--plot_dir needs matplotlib: pip install 'asd_jax[report]' ({e})") from e
  detector, detections = detect.run(f.detector, argv[1:], machine=f.machine, section=f.section, output=f.output,
                                    windows_output=f.windows_output)
  if f.plot_dir:
    for path in histograms.write_detect_figures(detector, detections, f.plot_dir):
      print(f"histogram: {path}")


if __name__ == "__main__":
  define_flags()
  cli.run(main, renamed_flags={"system": "detector"})  # bad input exits with "error: <message>" and status 1
