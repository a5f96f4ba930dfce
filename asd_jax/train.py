r"""Fine-tunes one model on a DCASE dataset (the program; the work is `asd_jax.finetuning.fine_tune.train`).

  python -m asd_jax.train --config=configs/leat.py --workdir=/abs/or/rel/DIR \
      [--config.model.init_checkpoint=PATH] [--config.train.epochs=2] [--dry_run] [--noresume]
  python -m asd_jax.train --config=configs/dual_branch.py --workdir=DIR \
      --config.model.beats_checkpoint=PATH --config.model.eat_checkpoint=PATH

The workdir receives `checkpoints/`, `config.json`, `label_space.json` and `metrics.jsonl`; a run continues from
its latest checkpoint after checking that it was written with the same settings (see
`asd_jax.finetuning.fine_tune`). `--dry_run` prints the parameter summary (total and trainable counts) and exits.
Config values that make no sense (`asd_jax.config_checks`) are refused before anything is read, and the
workdir is locked (`asd_jax.workdir_lock`): a second run on it is refused, naming the process that holds it.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from asd_jax import cli
from asd_jax.finetuning import fine_tune


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.cli`)."""
  config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).")
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the label space.")
  flags.DEFINE_boolean("dry_run", False, "Print the parameter summary and exit.")
  flags.DEFINE_boolean("resume", True, "Continue from the latest checkpoint in the workdir if any; "
                       "--noresume refuses to run in a workdir that has checkpoints.")
  flags.DEFINE_boolean("accept_changes", False, "Continue from the latest checkpoint even though it was written "
                       "with other optimiser settings or length (config.optim values, config.train.epochs): each "
                       "change is logged and recorded in the checkpoints. The way on after a divergence: a lower "
                       "learning rate from the last finite checkpoint.")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cli.quiet_by_default()
  fine_tune.train(flags.FLAGS.config, flags.FLAGS.workdir, dry_run=flags.FLAGS.dry_run, resume=flags.FLAGS.resume,
                  accept_changes=flags.FLAGS.accept_changes)


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; bad input (missing or wrong-kind file, config typo) exits with "error: <message>"
