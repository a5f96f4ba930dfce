r"""The whole system in one command: fine-tune, embed, score, fuse, evaluate, write submissions, export a detector.

  python -m asd_jax.pipeline --config=configs/system1.py --workdir=DIR [--config.data.root=ROOT]
      [--config.init.beats=/abs/ckpt/beats --config.init.eat=/abs/ckpt/eat_large] [--config.model_keys=...]

Trains the models that are not done yet (resumable), embeds every clip (cached), scores each model with SMOTE +
cosine 1-NN, fuses the four systems, prints Table 1 (per model, reference rows last) and Table 3 (per system),
writes DIR/submissions/<system>/ and exports the detector of `config.system` to DIR/detector/. A re-run reuses
what is done; a workdir made with another model config or on changed clips is refused. The package docstring
of `asd_jax.pipeline` lists every file the workdir holds.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from asd_jax import cli
from asd_jax.pipeline import results
from asd_jax.pipeline import stages


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.cli`)."""
  config_flags.DEFINE_config_file("config", None, "Pipeline config (configs/system1.py, "
                                  "configs/demo_pipeline.py, ...).")
  flags.DEFINE_string("workdir", None, "Output folder: models/, scores/, submissions/, detector/.")
  flags.DEFINE_boolean("bars", True, "Show the training and embedding progress bars.")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cli.quiet_by_default()
  result = stages.run(flags.FLAGS.config, flags.FLAGS.workdir, progress=True, bars=flags.FLAGS.bars)
  print()
  print(result.tables)
  print()
  print(results.format_stage_times(result.stage_s))


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; bad input (dataset, config, workdir of another model) exits with "error: <message>"
