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
import sys
from collections.abc import Sequence

from absl import app, flags

from asd_jax.evaluation.metrics import format_table
from asd_jax.evaluation.official import evaluate_dirs, format_sections


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """CLI flags, defined only when run as a program so importers can reuse these flag names."""
  flags.DEFINE_string("scores", None, "Folder of anomaly_score_* and decision_result_* CSV files.")
  flags.DEFINE_string("ground_truth", None, "Folder with ground_truth_data/, ground_truth_domain/ "
                      "(and optionally ground_truth_attributes/).")
  flags.DEFINE_string("json", None, "Write the machine-readable result to this file.")
  flags.DEFINE_bool("decisions", True, "Read decision_result_* files (precision, recall, F1).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.scores or not FLAGS.ground_truth:
    raise app.UsageError("--scores and --ground_truth are required")
  try:
    evaluation = evaluate_dirs(FLAGS.scores, FLAGS.ground_truth, decisions=FLAGS.decisions)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  print(format_sections(evaluation))
  print()
  print(format_table(evaluation))
  ci95 = evaluation.official_score_ci95
  print(f"\nofficial score: {evaluation.official_score:.6f}" +
        ("" if ci95 is None else f" (CI95 +/- {ci95:.6f}, the official jackknife over all clips)"))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(evaluation.to_json_dict(), f, indent=2)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
