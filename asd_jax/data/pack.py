r"""Packs a pre-training corpus into ArrayRecord shards, once, for fast reading at scale.

  python -m asd_jax.data.pack --config=configs/pretrain_corpus.py --out=/data/packed/pretrain \
      --config.sources.dcase2023.path=/data/dcase2023t2 \
      --config.sources.audioset_unbalanced.path=/data/audioset/unbalanced_train_segments --num_workers=8

`--config` is a corpus config (`asd_jax.data.corpus`: sources, sample rate, min_seconds, test-clip
exclusion); any field can be overridden. Every clip is decoded once (mono, resampled to the corpus rate)
and stored whole; bad files (unreadable, empty, too short, silent, non-finite) are skipped and listed in
`<out>/manifest.json` with their reason, never stopping the job. Re-running the same command after a kill
resumes at the first unfinished shard; `--verify` checks every shard's size and SHA-256 afterwards. Point
a pre-training config at the result with `--config.data.packed=<out>`. Format: `asd_jax.data.shards`.
"""

from __future__ import annotations

import time

from absl import flags
from ml_collections import config_flags

from asd_jax import cli
from asd_jax.data import shards

def define_flags() -> None:
  """Defines this program's flags; called only when run as a program (see `asd_jax.cli`)."""
  config_flags.DEFINE_config_file("config", None, "corpus config file (get_config() -> corpus config)")
  flags.DEFINE_string("out", None, "output folder (default: the config's `packed` field)")
  flags.DEFINE_integer("clips_per_shard", 1024, "files per shard (1024 clips of 10 s in pcm16: about 330 MB)")
  flags.DEFINE_enum("encoding", "pcm16", list(shards.ENCODINGS), "pcm16: int16 samples, fastest to read; flac: "
                    "smaller (74 % on the synthetic DCASE clips), about 10x slower to read")
  flags.DEFINE_integer("num_workers", None, "decoding processes (default: the config's num_workers; 0 = this "
                       "process)")
  flags.DEFINE_bool("overwrite", False, "replace a pack of another corpus in --out")
  flags.DEFINE_integer("max_new_shards", None, "stop after this many new shards (re-run to continue)")
  flags.DEFINE_bool("verify", False, "afterwards, re-read every shard and check its SHA-256")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  config = f.config
  if config is None:
    raise ValueError("--config is required (a corpus config, e.g. configs/pretrain_corpus.py)")
  out = f.out or config.get("packed")
  if not out:
    raise ValueError("--out is required (or set the config's packed field)")
  workers = config.num_workers if f.num_workers is None else f.num_workers
  start = time.perf_counter()
  manifest = shards.pack(config, out, clips_per_shard=f.clips_per_shard, encoding=f.encoding, num_workers=workers,
                         overwrite=f.overwrite, max_new_shards=f.max_new_shards)
  seconds = time.perf_counter() - start
  print(shards.format_summary(manifest))
  print(f"wrote {out}/{shards.MANIFEST} in {seconds:.1f} s")
  if f.verify:
    problems = shards.verify(out)
    print("verify: every shard matches its SHA-256" if not problems else "verify FAILED:\n  " + "\n  ".join(problems))
    if problems:
      raise SystemExit(1)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
