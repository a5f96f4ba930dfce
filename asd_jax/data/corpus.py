"""Unlabelled pre-training clips: a corpus config -> an endless, resumable stream of this host's batches.

`pretraining_batches(data_config, batch_size=B, seed=S)` returns `(iterator, num_clips)`: a Grain iterator
of this process's batches (`B // jax.process_count()` rows each, forever) with `get_state()` /
`set_state()`, and the number of clips in the corpus (all hosts). A batch is

  {"wav": float32 [rows, samples],        samples = clip_seconds * sample_rate, 16 kHz mono in [-1, 1]
   "valid_samples": int32 [rows],         how many leading samples are audio; the rest is padding
   "source": int32 [rows]}                the row's source, an index into the sorted source names

The corpus is read from its sources directly (`packed=""`: small corpora and tests) or from the ArrayRecord
shards that `python -m asd_jax.data.pack` wrote (`packed=DIR`); both give the same clips, and the same
batches for the same seed when the files are 16-bit at the corpus rate (packing stores int16).

Config (`default_config()`; the sources are described in `asd_jax.data.corpus_sources`):

| field                  | default | meaning                                                                    |
| ---------------------- | ------- | -------------------------------------------------------------------------- |
| `sources`              | {}      | name -> {"path", "kind": "dcase" / "folder" / "glob", "weight": 1.0,        |
|                        |         | "include_test", "include_supplemental", "exclude"}; "" path = unused       |
| `packed`               | ""      | a packed corpus folder; "" reads the sources directly                      |
| `sample_rate`          | 16000   | Hz; other rates are resampled by the loader (`asd_jax.audio.wav`)          |
| `channels`             | "mean"  | default channel policy of the sources (`asd_jax.audio.channels`; a source's |
|                        |         | own `channels` key overrides it): the channel mean, as upstream EAT's       |
|                        |         | fairseq loader mixes AudioSet down; "near" or "cancel" for DCASE 2026 trees |
| `clip_seconds`         | 10.0    | clip length (EAT pre-training: 10 s)                                       |
| `pad`                  | "eat"   | shorter clips: "eat" zero-pads (see below), "repeat" tiles the clip        |
| `min_seconds`          | 0.1     | shorter files are rejected as bad (project choice: below ~0.1 s a clip is   |
|                        |         | ten fbank frames, nothing to pre-train on)                                 |
| `include_test`         | False   | default of the sources' `include_test` (DCASE `test/` clips)               |
| `include_supplemental` | True    | default of the sources' `include_supplemental` (DCASE 2025 `supplemental/`)|
| `validate`             | True    | direct reading: decode every file once first and skip the bad ones         |
| `num_workers`          | 0       | Grain worker processes (and validation processes for sources of 1000+ files) |
| `read_threads`         | 2       | threads per process computing batches (Grain `ReadOptions.num_threads`)    |
| `read_ahead`           | 4       | batches read ahead per process (Grain's default, 500, would hold 500       |
|                        |         | batches of 10 s clips in memory)                                           |

Weights: the probability of drawing a clip is proportional to its source's `weight`, so a source of n_i
clips makes up w_i n_i / sum_j w_j n_j of the stream; all weights 1 (the default) draw every clip equally
often, like one shuffled pool. Each source is read pass after pass, every pass in a new random order, and
Grain's `MapDataset.mix` interleaves the sources with proportions w_i n_i (deterministically: every window of the
stream holds each source's share; Grain rounds the proportions to integers, the smallest to 100).

Crops and padding: a clip longer than `clip_seconds` is cropped at a uniformly random start, drawn by
Grain's `random_map` from (seed, host, position in the stream), so the crop changes every time the clip
comes round, and a restored iterator draws the same crops again. Upstream EAT computes the fbank of the
whole clip and pads it with zero log-mel frames to 1024 frames (or keeps the first 1024). With
`pad="eat"` a short clip is zero-padded here and `valid_samples` says where the audio ends, so the
front end can do the same: `asd_jax.audio.padded_fbank.fbank_of_padded(wav, valid_samples, EAT_FBANK)`
equals the fbank of the unpadded clip (frames past the end are EAT's zero frames). Upstream EAT takes
the first 10.24 s of a longer clip; the random crop is the issue's choice (more views of long DCASE
2023/2024 clips).

Sharding: every source's clips are split into contiguous, near-equal parts per process (`grain.sharding.
ShardByJaxProcess`, split as Grain's `even_split`); a process whose part of a tiny source is empty reads one clip of it.
Batching happens before the worker processes, so the batches do not depend on `num_workers`.

Bad files: direct reading with `validate` decodes every file when the iterator is built, with the same
checks as packing (unreadable, empty, too short, silent, non-finite; `corpus_sources.read_clip`), and
skips the bad ones with a warning listing them; the iterator never meets them. `validate=False` trusts
the files, and a bad one raises `CorpusError` naming it when it is read.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags
from absl import logging

from asd_jax.audio import channels as channels_lib
from asd_jax.audio import wav as wavlib
from asd_jax.data import corpus_sources as cs
from asd_jax.data import digest
from asd_jax.data import shards as shards_lib

CorpusError = cs.CorpusError
PAD_MODES = ("eat", "repeat")
_ENDLESS = sys.maxsize  # the length Grain gives a repeated dataset


def source(path: str = "", kind: str = "folder", weight: float = 1.0, **options: Any) -> ml_collections.ConfigDict:
  """One source entry for `data_config.sources` (options: include_test, include_supplemental, exclude, channels)."""
  unknown = sorted(set(options) - set(cs.SOURCE_KEYS))
  if unknown:
    raise CorpusError(f"unknown source option(s) {unknown}; known: {list(cs.SOURCE_KEYS)}")
  return ml_collections.ConfigDict({"path": path, "kind": kind, "weight": float(weight), **options})


def default_config() -> ml_collections.ConfigDict:
  """The corpus config with its defaults (see the module docstring); add sources with `source()`."""
  c = ml_collections.ConfigDict()
  c.sources = ml_collections.ConfigDict()
  c.packed = ""
  c.sample_rate = wavlib.SAMPLE_RATE
  c.channels = channels_lib.LEGACY  # see the module docstring
  c.clip_seconds = 10.0
  c.pad = "eat"
  c.min_seconds = 0.1
  c.include_test = False
  c.include_supplemental = True
  c.validate = True
  c.num_workers = 0
  c.read_threads = 2
  c.read_ahead = 4
  return c


def _derive_seed(*parts: Any) -> int:
  """A 32-bit seed from any parts (stable across runs and machines)."""
  return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


def fit_clip(num_available: int, num_samples: int, rng: np.random.Generator) -> tuple[int, int]:
  """(start, count) of the part of a clip of `num_available` samples that goes into a `num_samples` row.

  Longer clips: a uniformly random start in [0, num_available - num_samples] (one `rng.integers` draw).
  Otherwise the whole clip (start 0, count num_available); the caller pads the rest.
  """
  if num_available > num_samples:
    return int(rng.integers(0, num_available - num_samples + 1)), num_samples
  return 0, num_available


def pad_clip(wav: np.ndarray, num_samples: int, pad: str) -> tuple[np.ndarray, int]:
  """float32 [n <= num_samples] -> (float32 [num_samples], valid samples): zero ("eat") or tiled ("repeat")."""
  n = wav.shape[0]
  if n == num_samples:
    return wav, n
  if pad == "repeat":
    return wavlib.fix_length(wav, num_samples, "repeat"), num_samples
  return np.pad(wav, (0, num_samples - n)), n


class _SourcePasses:
  """Position k in a source's endless stream -> (source index, clip index): pass after pass over the clips
  [start, start + count), each pass in its own random order (a NumPy permutation seeded by (seed, pass)).

  Grain's `MapDataset.shuffle` does the same with an index-shuffle cipher that cost ~1 ms per element here
  (a third of the reading time); one permutation per pass costs ~30 ms per million clips. Picklable for
  Grain workers; the permutation of the current pass is cached (recomputing it after a race is harmless).
  """

  def __init__(self, source_index: int, start: int, count: int, seed: int):
    self._source, self._start, self._count, self._seed = source_index, start, count, seed
    self._cached: tuple[int, np.ndarray] | None = None

  def __getstate__(self):
    return {**self.__dict__, "_cached": None}

  def order(self, epoch: int) -> np.ndarray:
    """The clip order of pass `epoch`: a permutation of [start, start + count)."""
    cached = self._cached
    if cached is None or cached[0] != epoch:
      cached = (epoch, self._start + np.random.default_rng([self._seed, epoch]).permutation(self._count))
      self._cached = cached
    return cached[1]

  def __call__(self, position: int) -> tuple[int, int]:
    epoch, i = divmod(int(position), self._count)
    return self._source, int(self.order(epoch)[i])


class _ReadClip:
  """(source, clip), rng -> one row; reads wav files (direct) or packed records, opened lazily per process."""

  def __init__(self, *, paths: Sequence[Sequence[str]] | None, packed: Sequence[Sequence[tuple[str, int]]] | None,
               num_samples: int, pad: str, sample_rate: int, min_seconds: float,
               channels: Sequence[str] | None = None):
    self._paths = paths
    self._channels = channels  # per source, for direct reading (a packed clip is stored after its policy)
    self._packed = packed
    self._num_samples = num_samples
    self._pad = pad
    self._sample_rate = sample_rate
    self._min_seconds = min_seconds
    self._sources = None

  def __getstate__(self):
    return {**self.__dict__, "_sources": None}

  def _packed_source(self, i: int):
    if self._sources is None:
      # "path[0:n]" gives the record count, so opening a source reads no file until a record is needed.
      self._sources = [grain.sources.ArrayRecordDataSource([f"{f}[0:{n}]" for f, n in shard_files])
                       for shard_files in self._packed]
    return self._sources[i]

  def __call__(self, element: tuple[int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    i, clip = element
    if self._paths is not None:
      path = self._paths[i][clip]
      try:
        wav = cs.read_clip(path, sample_rate=self._sample_rate, min_seconds=self._min_seconds,
                           channels=self._channels[i] if self._channels else channels_lib.LEGACY)
      except cs.BadClip as e:
        raise CorpusError(f"{path}: {e} (the corpus was not validated: data.validate=False)") from e
      start, count = fit_clip(wav.shape[0], self._num_samples, rng)
      wav = wav[start:start + count]
    else:
      record = self._packed_source(i)[clip]
      header, offset = shards_lib.decode_header(record)
      start, count = fit_clip(header["samples"], self._num_samples, rng)
      wav = shards_lib.decode_samples(record, header, offset, start, count)
    wav, valid = pad_clip(np.asarray(wav, np.float32), self._num_samples, self._pad)
    return {"wav": wav, "valid_samples": np.int32(valid), "source": np.int32(i)}


def default_shard() -> grain.sharding.ShardOptions:
  """This process's shard: `grain.sharding.ShardByJaxProcess()` (jax.process_index / process_count)."""
  return grain.sharding.ShardByJaxProcess(drop_remainder=False)


def shard_range(num_clips: int, shard: grain.sharding.ShardOptions) -> tuple[int, int]:
  """[start, end) of this process's clips of a source: contiguous near-equal parts, the remainder going to the
  first processes (as Grain's `even_split`); one clip when that leaves a process none."""
  base, remainder = divmod(num_clips, shard.shard_count)
  start = shard.shard_index * base + min(shard.shard_index, remainder)
  end = start + base + (shard.shard_index < remainder)
  if end > start:
    return start, end
  one = shard.shard_index % num_clips
  return one, one + 1


def _stream(sizes: Sequence[int], weights: Sequence[float], reader: _ReadClip, *, rows: int, seed: int,
            shard: grain.sharding.ShardOptions, num_workers: int, read_threads: int, read_ahead: int):
  parts = []
  for i, n in enumerate(sizes):
    start, end = shard_range(n, shard)
    passes = _SourcePasses(i, start, end - start, _derive_seed(seed, "shuffle", i, shard.shard_index))
    parts.append(grain.MapDataset.range(_ENDLESS).map(passes))
  mixed = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, [w * n for w, n in zip(weights, sizes)])
  batches = mixed.random_map(reader, seed=_derive_seed(seed, "crop", shard.shard_index))
  # Grain's default ReadOptions read 500 elements ahead with 16 threads: 500 *batches* here (tens of GB of
  # 10 s clips), so the read-ahead is set explicitly.
  read = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=read_ahead)
  batches = batches.batch(rows, drop_remainder=True).to_iter_dataset(read)
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (grain 0.2.18)
      flags.FLAGS.mark_as_parsed()
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(batches)


def _check_config(data_config: Any) -> None:
  if int(data_config.read_ahead) < 1 or int(data_config.read_threads) < 0:
    raise CorpusError(f"data.read_ahead must be >= 1 and data.read_threads >= 0, got {data_config.read_ahead}, "
                      f"{data_config.read_threads}")
  if data_config.pad not in PAD_MODES:
    raise CorpusError(f"data.pad must be one of {PAD_MODES}, got {data_config.pad!r}")
  if not data_config.clip_seconds > 0:
    raise CorpusError(f"data.clip_seconds must be > 0, got {data_config.clip_seconds}")


def _has_sources(data_config: Any) -> bool:
  sources = data_config.get("sources")
  if not sources:
    return False
  entries = sources.values() if hasattr(sources, "values") else sources
  return any(cs._as_dict(e).get("path") for e in entries)  # pylint: disable=protected-access


def _packed_sources(data_config: Any, manifest: dict) -> list[float]:
  """Weights of the packed sources: the config's where it names the sources, else the manifest's."""
  packed = manifest["sources"]
  if int(manifest["settings"]["sample_rate"]) != int(data_config.sample_rate):
    raise CorpusError(f"{data_config.packed} was packed at {manifest['settings']['sample_rate']} Hz, the config "
                      f"asks for {data_config.sample_rate} Hz; re-pack")
  if not _has_sources(data_config):
    return [float(s["weight"]) for s in packed]
  specs = cs.source_specs(data_config)
  if [s.name for s in specs] != [s["name"] for s in packed]:
    raise CorpusError(f"data.sources {[s.name for s in specs]} are not the packed corpus's sources "
                      f"{[s['name'] for s in packed]} ({data_config.packed}); re-pack, or leave data.sources empty")
  for spec, entry in zip(specs, packed):
    ours = {k: v for k, v in spec.to_json().items() if k != "weight"}
    theirs = {k: entry.get(k, "<absent>") for k in ours}
    if ours != theirs:
      raise CorpusError(f"source {spec.name!r} was packed with {theirs}, the config says {ours}; re-pack "
                        f"({data_config.packed})")
  return [s.weight for s in specs]


def _direct_sources(data_config: Any) -> tuple[list[list[str]], list[float], list[str]]:
  listed = cs.list_sources(cs.source_specs(data_config))
  paths, weights, policies = [], [], []
  for files in listed:
    if data_config.validate:
      # Worker processes for big sources only: below ~1000 files starting them costs more than it saves.
      workers = int(data_config.num_workers) if len(files.paths) >= 1000 else 0
      good, bad = cs.check_clips(files.paths, sample_rate=int(data_config.sample_rate),
                                 min_seconds=float(data_config.min_seconds), num_workers=workers,
                                 channels=files.spec.channels)
      for path, reason in bad[:20]:
        logging.warning("corpus source %s: skipping %s: %s", files.spec.name, path, reason)
      if len(bad) > 20:
        logging.warning("corpus source %s: ... and %d more bad files", files.spec.name, len(bad) - 20)
      kept = [p for p, _ in good]
      if not kept:
        raise CorpusError(f"source {files.spec.name!r}: every one of its {len(bad)} files is bad, e.g. "
                          f"{bad[0][0]}: {bad[0][1]}")
    else:
      kept, bad = list(files.paths), []
    left_out = ", ".join(f"{n} {why}" for why, n in sorted(files.excluded.items()))
    logging.info("corpus source %s (%s %s, weight %g): %d clips, %d bad files skipped%s", files.spec.name,
                 files.spec.kind, files.spec.path, files.spec.weight, len(kept), len(bad),
                 f"; left out: {left_out}" if left_out else "")
    paths.append(kept)
    weights.append(files.spec.weight)
    policies.append(files.spec.channels)
  return paths, weights, policies


def _source_root(spec: cs.SourceSpec) -> str:
  """The folder a source's clip names are relative to: its path, or a glob pattern's folder before any wildcard."""
  if spec.kind != "glob":
    return spec.path
  parts = pathlib.PurePath(spec.path).parts
  fixed = [p for p in itertools.takewhile(lambda part: not any(c in part for c in "*?["), parts)]
  return str(pathlib.PurePath(*fixed)) if fixed else "."


def file_table(data_config: Any, cache_path: str | None, *, save: bool = True) -> tuple[dict[str, str], str]:
  """`(table, where)`: what a pre-training run records of its data (`asd_jax.data.digest.file_table`, checked on
  resume by `training.loop.check_same_clips`), and how a message names the corpus.

  Packed (`data.packed`): {shard file: its SHA-256 from the manifest}, the pack's own digest of every byte it
  wrote (hashing a packed AudioSet again on every start would read hundreds of GB). Direct: {"<source>/<path
  relative to the source>": content SHA-256} of every file the sources list, before validation (a bad file that
  is later fixed counts as changed), through the hash cache `cache_path` (see `asd_jax.data.digest`: a first
  start hashes every file once, later ones stat them).
  """
  if data_config.packed:
    manifest = shards_lib.open_packed(data_config.packed)
    table = {shard["file"]: shard["sha256"] for source in manifest["sources"] for shard in source["shards"]}
    return table, f"the packed corpus {data_config.packed}, its shards"
  paths = {}
  for files in cs.list_sources(cs.source_specs(data_config)):
    root = _source_root(files.spec)
    paths.update({f"{files.spec.name}/{os.path.relpath(p, root)}": p for p in files.paths})
  return digest.hashed_table(paths, cache_path, save=save), "config.data.sources, by source"


def pretraining_batches(data_config: Any, *, batch_size: int, seed: int,
                        shard: grain.sharding.ShardOptions | None = None):
  """This process's endless pre-training batches, and the corpus's clip count (see the module docstring).

  Args:
    data_config: the corpus config (`default_config()` and its fields).
    batch_size: global batch; each of the `shard.shard_count` processes gets `batch_size // shard_count` rows.
    seed: shuffling and cropping seed.
    shard: this process's shard; default `grain.sharding.ShardByJaxProcess()`.

  Returns:
    (iterator, num_clips): a Grain iterator of `{"wav": float32 [rows, samples], "valid_samples": int32
    [rows], "source": int32 [rows]}` with `get_state()` / `set_state()`, and the clips in the whole corpus.

  Raises:
    CorpusError: a bad config or source; shards_lib.PackError: an unusable packed folder.
  """
  _check_config(data_config)
  shard = default_shard() if shard is None else shard
  if batch_size % shard.shard_count:
    raise CorpusError(f"batch_size {batch_size} is not divisible by the {shard.shard_count} processes")
  rows = batch_size // shard.shard_count
  if rows < 1:
    raise CorpusError(f"batch_size must be >= {shard.shard_count} (one row per process), got {batch_size}")
  num_samples = int(round(data_config.clip_seconds * data_config.sample_rate))
  common = {"num_samples": num_samples, "pad": data_config.pad, "sample_rate": int(data_config.sample_rate),
            "min_seconds": float(data_config.min_seconds)}
  if data_config.packed:
    manifest = shards_lib.open_packed(data_config.packed)
    weights = _packed_sources(data_config, manifest)
    root = data_config.packed
    files = [[(os.path.join(root, s["file"]), s["clips"]) for s in source["shards"] if s["clips"]]
             for source in manifest["sources"]]
    sizes = [source["clips"] for source in manifest["sources"]]
    empty = [source["name"] for source in manifest["sources"] if not source["clips"]]
    if empty:
      raise CorpusError(f"packed source(s) {empty} hold no clip ({root}/{shards_lib.MANIFEST} lists why)")
    reader = _ReadClip(paths=None, packed=files, **common)
  else:
    paths, weights, policies = _direct_sources(data_config)
    sizes = [len(p) for p in paths]
    reader = _ReadClip(paths=paths, packed=None, channels=policies, **common)
  iterator = _stream(sizes, weights, reader, rows=rows, seed=seed, shard=shard,
                     num_workers=int(data_config.num_workers), read_threads=int(data_config.read_threads),
                     read_ahead=int(data_config.read_ahead))
  return iterator, int(sum(sizes))
