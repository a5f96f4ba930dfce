r"""Pre-trains EAT self-supervised (data2vec 2.0 style, as upstream EAT): from scratch or from a release.

  python -m asd_jax.pretrain --config=configs/pretrain_eat_large.py:dcase:/data/dev,folder:/data/as2m \
      --workdir=DIR [--config.model.init_checkpoint=EAT-large_epoch20_pretrain.pt] [--dry_run] [--noresume]
  python -m asd_jax.pretrain --config=configs/pretrain_eat_large.py:report --workdir=DIR \
      --config.data.sources.dcase2020.path=/data/dcase2020t2 ...   (the report's corpus; or --config.data.packed=DIR)
  python -m asd_jax.pretrain --config=... --workdir=DIR --export_only [--export_teacher]

The workdir receives `checkpoints/` (Orbax: student, decoder, optimiser state, EMA teacher, step, data
position, config), `config.json`, `metrics.jsonl` and, at the end, `encoder/`: the student as a converted EAT
checkpoint for fine-tuning (`--config.model.init_checkpoint=DIR/encoder` with configs/feat.py, leat.py,
dual_branch.py via `eat_checkpoint`). A run continues from its latest checkpoint after checking that it was
written with the same settings (`asd_jax.pretraining.pretrain.RUN_FIELDS`). `--export_only` writes `encoder/`
(and with `--export_teacher` also `teacher/`) from the latest checkpoint without training.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from asd_jax import cli
from asd_jax.pretraining import pretrain


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.cli`)."""
  config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/pretrain_*.py[:sources]).")
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the exported encoder.")
  flags.DEFINE_boolean("dry_run", False, "Print the model summary and exit.")
  flags.DEFINE_boolean("resume", True, "Continue from the latest checkpoint in the workdir if any; "
                       "--noresume refuses to run in a workdir that has checkpoints.")
  flags.DEFINE_boolean("accept_changes", False, "Continue from the latest checkpoint even though it was written "
                       "with other optimiser settings or length (config.optim values, config.train.num_steps): each "
                       "change is logged and recorded in the checkpoints. The way on after a divergence: a lower "
                       "learning rate from the last finite checkpoint.")
  flags.DEFINE_boolean("export_only", False, "Write <workdir>/encoder from the latest checkpoint and exit.")
  flags.DEFINE_boolean("export_teacher", False, "Also write the EMA teacher to <workdir>/teacher.")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  cli.quiet_by_default()
  pretrain.pretrain(f.config, f.workdir, dry_run=f.dry_run, resume=f.resume, accept_changes=f.accept_changes,
                    export_only=f.export_only,
                   export_teacher=f.export_teacher)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
