"""Official DCASE Task 2 evaluation of a submission folder, under any year's protocol (2020-2026) (the program; the
work is `asd_jax.evaluation.official`).

  python -m asd_jax.evaluate --scores DIR --dataset ROOT       [--year YEAR] [--json FILE] [--nodecisions]
  python -m asd_jax.evaluate --scores DIR --ground_truth DIR   [--year YEAR] [--json FILE] [--nodecisions]

reads a submission folder (`anomaly_score_*` and `decision_result_*` files, named as the year's baseline named
them or in the 2022+ form, see `asd_jax.evaluation.files`) and the truth: with `--dataset`, the labels and
domains in the file names of a development set's test clips (any year's layout, 2021's `source_test/` and
`target_test/` included); with `--ground_truth`, an official ground truth (a 2022+ folder, 2021's per-domain files,
or 2020's `eval_data_list.csv`). The year's rules (`asd_jax.evaluation.protocol`) come from the names and layout,
or from `--year`.

It prints the per-section metrics (2020: per machine ID; 2021: per section and domain), the per-machine-type table
and the official score, then which sections the summary covers. A section that cannot be evaluated (only normal
or only anomalous clips, no normal clips of a domain, hidden labels) is a blank row and one `warning:` line on
stderr naming it; the summary is over the other sections and the run still succeeds. `--json` writes
`Evaluation.to_json_dict()`: {"protocol", "official_score", ..., "n_sections", "n_evaluated", "warnings",
"sections": [{"machine", "section", "auc_source", ..., "problem"}], "machines": [...]}.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from absl import app, flags

from asd_jax import atomic
from asd_jax import cli
from asd_jax.evaluation import protocol as protocol_lib
from asd_jax.evaluation.metrics import format_table
from asd_jax.evaluation.official import evaluate_dataset, evaluate_dirs, format_sections


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.cli`)."""
  flags.DEFINE_string("scores", None, "Folder of anomaly_score_* and decision_result_* CSV files.")
  flags.DEFINE_string("dataset", None, "A development set (one folder per machine type, any DCASE year): the labels "
                      "and domains are read from its test clips' file names.")
  flags.DEFINE_string("ground_truth", None, "Instead of --dataset: a folder with ground_truth_data/, "
                      "ground_truth_domain/ (and optionally ground_truth_attributes/), or 2021's per-domain "
                      "ground_truth_data/ files, or 2020's eval_data_list.csv.")
  flags.DEFINE_string("year", None, "The DCASE year whose protocol applies (2020-2026). Default: found from the "
                      "clips' names and layout (2020: machine IDs; 2021: source_test/ and target_test/; else "
                      "2022-2026, which share one protocol).")
  flags.DEFINE_string("json", None, "Write the machine-readable result to this file.")
  flags.DEFINE_bool("decisions", True, "Read decision_result_* files (precision, recall, F1; none in 2020).")


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
  if not f.scores or bool(f.dataset) == bool(f.ground_truth):
    raise app.UsageError("--scores and one of --dataset or --ground_truth are required")
  year = protocol_lib.for_year(f.year) if f.year else None  # a bad --year fails before any work
  if f.json:
    check_writable(f.json)
  if f.dataset:
    evaluation = evaluate_dataset(f.scores, f.dataset, decisions=f.decisions, protocol=year)
  else:
    evaluation = evaluate_dirs(f.scores, f.ground_truth, decisions=f.decisions, protocol=year)
  if f.json:  # Before the tables: a failed write (a full disk) is one error line, not a traceback under them.
    try:
      atomic.write_text(f.json, json.dumps(evaluation.to_json_dict(), indent=2))
    except OSError as e:
      raise OSError(f"--json={f.json}: cannot write it: {e}") from e
  for warning in evaluation.warnings:
    print(f"warning: {warning}", file=sys.stderr)
  print(f"{evaluation.protocol.title} protocol\n")
  print(format_sections(evaluation))
  print()
  print(format_table(evaluation))
  if evaluation.official_score is not None:
    ci95 = evaluation.official_score_ci95
    print(f"\nofficial score: {evaluation.official_score:.6f}" +
          ("" if ci95 is None else f" (CI95 +/- {ci95:.6f}, the official jackknife over all clips)"))
  elif evaluation.arithmetic_mean is not None:
    print(f"\nmean of AUC and pAUC over machine types: {evaluation.arithmetic_mean:.6f} (DCASE 2020 had no official "
          "score of one system: it ranked the submissions against each other)")
  else:
    print("\nno official score: no section could be evaluated")


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; a bad score, ground-truth or dataset file, or an unwritable --json, exits with "error: ..."
