"""Official DCASE 2023-2025 Task 2 evaluation of a submission folder (the program; the work is
`asd_jax.evaluation.official`).

  python -m asd_jax.evaluate --scores DIR --ground_truth DIR [--json FILE] [--nodecisions]

reads a submission folder (`anomaly_score_*` and `decision_result_*` files) and an official
ground-truth folder, prints the per-section metrics and the report's Table 1 (per machine type
AUC (source), AUC (target), pAUC and their harmonic mean; the official score last), and with
`--json` writes `{"official_score": ..., "official_score_ci95": ..., "sections": [{"machine", "section", "auc_source",
"auc_target", "pauc", ...}], "machines": [...]}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from absl import app, flags

from asd_jax import atomic
from asd_jax import cli
from asd_jax.evaluation.metrics import format_table
from asd_jax.evaluation.official import evaluate_dirs, format_sections


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.cli`)."""
  flags.DEFINE_string("scores", None, "Folder of anomaly_score_* and decision_result_* CSV files.")
  flags.DEFINE_string("ground_truth", None, "Folder with ground_truth_data/, ground_truth_domain/ "
                      "(and optionally ground_truth_attributes/).")
  flags.DEFINE_string("json", None, "Write the machine-readable result to this file.")
  flags.DEFINE_bool("decisions", True, "Read decision_result_* files (precision, recall, F1).")


def check_writable(path: str) -> None:
  """Raises OSError naming `path` unless a file can be written there (the --json flag, checked before any work)."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise IsADirectoryError(f"--json={path}: is a directory")
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--json={path}: folder {folder} does not exist")
  if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
    raise PermissionError(f"--json={path}: not writable")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f.scores or not f.ground_truth:
    raise app.UsageError("--scores and --ground_truth are required")
  if f.json:
    check_writable(f.json)
  evaluation = evaluate_dirs(f.scores, f.ground_truth, decisions=f.decisions)
  if f.json:  # Before the tables: a failed write (a full disk) is one error line, not a traceback under them.
    try:
      atomic.write_text(f.json, json.dumps(evaluation.to_json_dict(), indent=2))
    except OSError as e:
      raise OSError(f"--json={f.json}: cannot write it: {e}") from e
  print(format_sections(evaluation))
  print()
  print(format_table(evaluation))
  ci95 = evaluation.official_score_ci95
  print(f"\nofficial score: {evaluation.official_score:.6f}" +
        ("" if ci95 is None else f" (CI95 +/- {ci95:.6f}, the official jackknife over all clips)"))


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; a bad score or ground-truth file, or an unwritable --json, exits with "error: ..."
