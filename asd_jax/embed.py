r"""Writes per-clip embeddings of a trained (or only converted) model for every clip of a dataset (the program;
the work is `asd_jax.embedding.embed.embed`).

  python -m asd_jax.embed --config=configs/leat.py --workdir=DIR [--layers=all|last] [--out=FILE]
  python -m asd_jax.embed --config=configs/dual_branch.py --workdir=DIR

Uses the latest training checkpoint in `DIR/checkpoints` (LoRA factors merged into the weights); without
one, the converted encoder(s) of the config (or random tiny encoders, for demos). Writes `embeddings.npz`
(float32, one row per clip) and `embeddings_records.json` (the clips in the same order); the keys are listed
in `asd_jax.embedding.store`. Config values that make no sense (`asd_jax.config_checks`) are refused before
anything is read, and the workdir is locked (`asd_jax.workdir_lock`): a second run on it is refused, naming
the process that holds it.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from asd_jax import cli
from asd_jax.embedding import embed


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.cli`)."""
  config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).")
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints, label space); output goes here.")
  flags.DEFINE_enum("layers", "all", ["all", "last"], "Also write every layer's pooled output.")
  flags.DEFINE_string("out", "", "Output .npz (default: WORKDIR/embeddings.npz).")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  cli.quiet_by_default()
  print(embed.embed(flags.FLAGS.config, flags.FLAGS.workdir, all_layers=flags.FLAGS.layers == "all",
                      out=flags.FLAGS.out))


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; bad input (missing or wrong-kind file, config typo) exits with "error: <message>"
