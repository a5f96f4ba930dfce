"""Benchmark: packing a pre-training corpus into ArrayRecord shards, and reading it back as batches.

Writes two small synthetic corpora of 10 s clips in a temporary folder: DCASE-like (16 kHz mono PCM16 wav)
and AudioSet-like (44.1 kHz stereo FLAC, resampled and mixed down by the loader). Packing rate: files per
second of `shards.pack` end to end (listing, decoding, checks, encoding, ArrayRecord writing, checksums),
in this process and with 2 decoding processes (their start-up included). Read rate: clips per second of
`corpus.pretraining_batches` (decoded, cropped to 10 s, batched; after the first batch) from the packed
shards (pcm16 and flac) and, for comparison, from the wav files directly. The machine's load average is
printed beside the figures: the 2 cores are shared with other jobs.

The section also derives the read rate that EAT-large pre-training on a TPU pod needs per host, from the
model FLOPs of one pre-training clip (`eat_pretraining_flops`) and an assumed model FLOP utilisation.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import tempfile
import time

import numpy as np
import soundfile

from benchmarks import common

SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class PretrainShape:
  """What one EAT pre-training clip costs: encoder, masking, clones and decoder (upstream's configs)."""

  depth: int
  dim: int
  mlp_ratio: float = 4.0
  patches: int = 512  # 1024 frames x 128 mel bins in 16 x 16 patches
  extra_tokens: int = 1  # CLS
  mask_prob: float = 0.8
  clones: int = 16
  decoder_dim: int = 768
  decoder_kernel: int = 3
  decoder_layers: int = 6
  decoder_groups: int = 16


# config/pretraining_AS2M.yaml and config/pretraining_AS2M_large.yaml of upstream EAT (cwx-worst-one/EAT 06c1c34).
EAT_BASE_PRETRAIN = PretrainShape(depth=12, dim=768)
EAT_LARGE_PRETRAIN = PretrainShape(depth=24, dim=1024, mask_prob=0.75, decoder_dim=1024, decoder_kernel=5,
                                   decoder_layers=3)


def encoder_forward_flops(depth: int, dim: int, tokens: int, mlp_ratio: float = 4.0) -> float:
  """Matmul FLOPs (2 per multiply-add) of a ViT encoder forward over `tokens` tokens.

  Per block and token: q, k, v and output projections 4 d^2, MLP 2 d (mlp_ratio d) multiply-adds; attention
  scores and the weighted sum 2 T d. LayerNorms, softmax, GELU and the patch embedding are left out (< 2 %).
  """
  per_token = 4 * dim * dim + 2 * dim * mlp_ratio * dim + 2 * tokens * dim
  return 2.0 * depth * tokens * per_token


def eat_pretraining_flops(shape: PretrainShape) -> dict[str, float]:
  """Model FLOPs of one clip of EAT pre-training: {"teacher", "student", "decoder", "total"}.

  The EMA teacher runs forward only (no gradient) on every token. The student runs forward and backward
  (3x forward) on the visible patches + CLS of each of `clones` masked views. The CNN decoder runs forward
  and backward on the full patch grid of each view (grouped convolutions, then a linear projection; every
  kernel tap counted, as a padded convolution computes them: XLA's cost analysis, which skips the taps on
  the padding, counts 7 % (base, kernel 3) / 14 % (large, kernel 5) less decoder work on the 64 x 8 grid,
  under 1 % of the total).
  """
  teacher = encoder_forward_flops(shape.depth, shape.dim, shape.patches + shape.extra_tokens, shape.mlp_ratio)
  visible = round(shape.patches * (1 - shape.mask_prob)) + shape.extra_tokens
  student = 3 * shape.clones * encoder_forward_flops(shape.depth, shape.dim, visible, shape.mlp_ratio)
  conv_in = [shape.dim] + [shape.decoder_dim] * (shape.decoder_layers - 1)
  decoder_macs = shape.patches * (sum(c // shape.decoder_groups * shape.decoder_kernel**2 * shape.decoder_dim
                                      for c in conv_in) + shape.decoder_dim * shape.dim)
  decoder = 3 * shape.clones * 2.0 * decoder_macs
  return {"teacher": teacher, "student": student, "decoder": decoder, "total": teacher + student + decoder}


# bf16 peak FLOP/s per chip (Google Cloud TPU documentation) and chips per host in a multi-host slice.
TPU_CHIPS = {"TPU v4": (275e12, 4), "TPU v5e": (197e12, 4), "TPU v5p": (459e12, 4)}
ASSUMED_MFU = 0.4  # a well-tuned transformer training step; a higher MFU needs a higher read rate


def _write_corpora(root: pathlib.Path, clips: int, seconds: float) -> dict[str, pathlib.Path]:
  rng = np.random.default_rng(0)
  out = {"dcase_wav": root / "dcase_wav", "audioset_flac": root / "audioset_flac"}
  for folder in out.values():
    folder.mkdir()
  for k in range(clips):
    x = (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
    soundfile.write(str(out["dcase_wav"] / f"c{k:04d}.wav"), x, SAMPLE_RATE, subtype="PCM_16")
    stereo = (0.1 * rng.standard_normal((int(seconds * 44100), 2))).astype(np.float32)
    soundfile.write(str(out["audioset_flac"] / f"Y{k:04d}.flac"), stereo, 44100)
  return out


def _config(folder: pathlib.Path, seconds: float):
  from asd_jax.data import corpus  # pylint: disable=g-import-not-at-top
  c = corpus.default_config()
  c.sources.s = corpus.source(str(folder))
  c.clip_seconds = seconds
  return c


def _read_rate(config, batches: int, batch_size: int) -> float:
  from grain.sharding import ShardOptions  # pylint: disable=g-import-not-at-top
  from asd_jax.data import corpus  # pylint: disable=g-import-not-at-top
  it, _ = corpus.pretraining_batches(config, batch_size=batch_size, seed=0, shard=ShardOptions(0, 1))
  next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - start)


def run(quick: bool = False) -> str:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from asd_jax.data import corpus_sources as cs  # pylint: disable=g-import-not-at-top
  from asd_jax.data import shards  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  clips, seconds, read_batches, batch = (8, 2.0, 4, 4) if quick else (96, 10.0, 24, 16)
  load_before = os.getloadavg()
  pack_rows, read_rows = [], []
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    corpora = _write_corpora(root, clips, seconds)
    shards.pack(_config(corpora["dcase_wav"], seconds), root / "warm-up", clips_per_shard=32, progress=False)
    start = time.perf_counter()  # what a pool of 2 decoding processes costs before it decodes anything
    with cs.worker_pool(2) as pool:
      pool.map(functools.partial(cs.check_clip, sample_rate=SAMPLE_RATE, min_seconds=0.1),
               [str(next(corpora["dcase_wav"].iterdir()))] * 2, chunksize=1)
    startup = time.perf_counter() - start
    packed = {}
    for name, folder in corpora.items():
      for workers in (0, 2):
        out = root / f"packed_{name}_{workers}"
        start = time.perf_counter()
        manifest = shards.pack(_config(folder, seconds), out, clips_per_shard=32, num_workers=workers, progress=False)
        wall = time.perf_counter() - start
        pack_rows.append([name, "pcm16", workers, clips, wall, clips / wall])
        packed[name] = out
        size = sum(s["bytes"] for s in manifest["sources"][0]["shards"])
      out = root / f"packed_{name}_flac"
      start = time.perf_counter()
      shards.pack(_config(folder, seconds), out, encoding="flac", clips_per_shard=32, num_workers=2, progress=False)
      wall = time.perf_counter() - start
      pack_rows.append([name, "flac", 2, clips, wall, clips / wall])
      packed[f"{name}_flac"] = out
    mib_per_clip = size / clips / 2**20
    for label, folder, packed_dir in [
        ("packed shards, pcm16", None, packed["dcase_wav"]),
        ("packed shards, flac", None, packed["dcase_wav_flac"]),
        ("wav files directly (16 kHz mono PCM16)", corpora["dcase_wav"], None),
        ("flac files directly (44.1 kHz stereo, resampled)", corpora["audioset_flac"], None)]:
      config = _config(folder if folder is not None else corpora["dcase_wav"], seconds)
      if packed_dir is not None:
        config.packed = str(packed_dir)
      read_rows.append([label, batch, _read_rate(config, read_batches, batch)])
  load_after = os.getloadavg()
  fl = eat_pretraining_flops(EAT_LARGE_PRETRAIN)
  fl_base = eat_pretraining_flops(EAT_BASE_PRETRAIN)
  pcm_rate = read_rows[0][2]
  need_rows = []
  for chip, (peak, per_host) in TPU_CHIPS.items():
    per_chip = ASSUMED_MFU * peak / fl["total"]
    need_rows.append([chip, peak / 1e12, per_chip, per_chip * per_host, per_chip * per_host / ASSUMED_MFU,
                      per_chip * per_host * 10 * SAMPLE_RATE * 2 / 2**20, pcm_rate / (per_chip * per_host)])
  lines = [
      "## Pre-training corpus: packing and reading (`asd_jax.data.pack`, `corpus.pretraining_batches`)", "",
      common.machine_description(), "",
      f"Load average (1, 5, 15 min) before: {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f}, after: "
      f"{load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f} (2 cores shared with other jobs). {clips} clips "
      f"of {seconds:g} s per corpus; shards of 32 clips; {mib_per_clip:.2f} MiB per packed pcm16 clip.", "",
      "Packing (end to end: listing, decoding, bad-file checks, encoding, ArrayRecord writes, SHA-256; after a "
      f"warm-up pack; with decoding processes the wall time includes starting them, {startup:.1f} s measured "
      "apart, paid once per job):", "",
      common.markdown_table(["corpus", "encoding", "decoding processes", "files", "wall s", "files/s"], pack_rows), "",
      f"Reading (`pretraining_batches`, batches of {batch}, {seconds:g} s random crops, one process, "
      f"`read_threads` 2, after the first batch):", "",
      common.markdown_table(["source", "batch", "clips/s"], read_rows), "",
      f"Rate EAT-large pre-training needs per host: model FLOPs per clip (`eat_pretraining_flops`, upstream's "
      f"large config: mask 0.75, 16 clones, CNN decoder 3 x k5 x 1024) = teacher {fl['teacher'] / 1e12:.2f} + "
      f"student {fl['student'] / 1e12:.2f} + decoder {fl['decoder'] / 1e12:.2f} = **{fl['total'] / 1e12:.2f} "
      f"TFLOP** (EAT-base: {fl_base['total'] / 1e12:.2f}). At {ASSUMED_MFU:.0%} MFU (bf16 peak):", "",
      common.markdown_table(["chip", "peak TFLOP/s", "clips/s per chip", "clips/s per host (4 chips)",
                             "per host at 100 % MFU", "MiB/s per host (pcm16)", "pcm16 read rate / need (1 process)"],
                            need_rows)]
  return "\n".join(lines)


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  print(run(quick="--quick" in sys.argv))
