r"""Writes the report of a pipeline workdir: figures and one self-contained HTML page.

  python -m asd_jax.report --workdir=DIR [--out=DIR/report] [--max_points=600] [--noembedding_maps] \
      [--section_maps]

Reads what `python -m asd_jax.pipeline` wrote to DIR (see `asd_jax.pipeline.workdir`) and writes
DIR/report/index.html (images embedded) and DIR/report/figures/*.png. Needs matplotlib (the `[report]` extra).
"""

from __future__ import annotations

from absl import app, flags

from asd_jax import cli


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.cli`)."""
  flags.DEFINE_string("workdir", None, "Pipeline workdir (results.json, tables.md, scores/, models/).")
  flags.DEFINE_string("out", "", "Output folder (default: WORKDIR/report).")
  flags.DEFINE_integer("max_points", 600, "At most this many points per embedding map (t-SNE).")
  flags.DEFINE_integer("seed", 0, "Seed of the embedding maps' subsample and t-SNE.")
  flags.DEFINE_boolean("embedding_maps", True, "Draw the embedding maps: one per model, all sections in one t-SNE.")
  flags.DEFINE_boolean("section_maps", False, "Also one embedding map per model and section (one t-SNE each; "
                       "slow: most of the report's time with many models and sections).")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    from asd_jax.report import build  # pylint: disable=g-import-not-at-top  (matplotlib is an extra)
  except ImportError as e:
    raise ValueError(f"the report needs matplotlib: pip install 'asd_jax[report]' ({e})") from e
  f = flags.FLAGS
  report = build.write_report(f.workdir, f.out or None, max_points=f.max_points, seed=f.seed,
                              embedding_maps=f.embedding_maps, section_maps=f.section_maps,
                              log=lambda line: print(line, flush=True))
  print(f"report  {len(report.figures)} figures, {report.index} ({report.seconds:.1f} s)")
  for note in report.notes:
    print(f"note    {note}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
