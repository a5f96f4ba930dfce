"""Grain input pipelines: ClipRecords + label space -> batches of fixed-length waveforms.

Two modes over the same building blocks (grain's `MapDataset` API):

* `training_dataset`: this host's shard of the records, shuffled with a seed (reshuffled each
  epoch), repeated (`num_epochs=None`: forever), batched with `drop_remainder=True`.
* `inference_dataset`: this host's shard in order, one pass, every record exactly once; the last
  batch is padded to `batch_size` and `"valid"` marks the real rows (for embedding extraction).

Batches are `{"wav": float32 [batch, samples], "label": int32 [batch], "index": int32 [batch]}`
(+ `"valid": bool [batch]` for inference), where `index` is the record's position in the given
list, so outputs map back to records. Batching happens before the optional worker processes
(`worker_count > 0` uses `mp_prefetch`), so the batch sequence is identical for any worker count.
`iter(dataset)` returns a grain iterator with `get_state()` / `set_state()`: restoring a saved
state resumes at the exact next batch. Sharding defaults to `jax.process_index()` /
`jax.process_count()` (jax imported only then); shards are disjoint and cover all records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grain
import numpy as np
from absl import flags

from asd_jax.audio import channels as channels_lib
from asd_jax.audio import wav as wavlib
from asd_jax.data import labels as labels_lib
from asd_jax.data import records as rec


@dataclasses.dataclass(frozen=True)
class WavConfig:
  """How clips are read (see `asd_jax.audio.wav.load_wav`)."""

  sample_rate: int = wavlib.SAMPLE_RATE
  duration_s: float = wavlib.DURATION_S
  pad: str = "repeat"
  strict: bool = False
  channels: str = channels_lib.DEFAULT  # the channel policy (asd_jax.audio.channels)

  @property
  def num_samples(self) -> int:
    return int(round(self.duration_s * self.sample_rate))


def wav_config(data_config) -> WavConfig:
  """The `WavConfig` of a config's `data` section (`sample_rate`, `clip_seconds`, `strict`, `channels`).

  A data section without `channels` (a config saved before the field existed) reads as it was read then:
  the channel mean (`channels.LEGACY`)."""
  return WavConfig(sample_rate=data_config.sample_rate, duration_s=data_config.clip_seconds,
                   strict=data_config.strict,
                   channels=channels_lib.check_policy(data_config.get("channels", channels_lib.LEGACY)))


class _LoadClip:
  """index -> {"wav", "label", "index"}; a picklable callable for worker processes."""

  def __init__(self, paths: Sequence[str], labels: np.ndarray, config: WavConfig):
    self._paths = list(paths)
    self._labels = labels
    self._config = config

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    c = self._config
    wav = wavlib.load_wav(self._paths[index], sample_rate=c.sample_rate, duration_s=c.duration_s,
                          pad=c.pad, strict=c.strict, channels=c.channels)
    return {"wav": wav, "label": self._labels[index], "index": np.int32(index)}


class _PadBatch:
  """Pads a (last, short) batch to `batch_size` rows and adds the `valid` mask."""

  def __init__(self, batch_size: int):
    self._batch_size = batch_size

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = batch["index"].shape[0]
    out = {k: np.concatenate([v, np.zeros((self._batch_size - n,) + v.shape[1:], v.dtype)])
           for k, v in batch.items()}
    out["valid"] = np.arange(self._batch_size) < n
    return out


def default_shard() -> tuple[int, int]:
  """(jax.process_index(), jax.process_count())."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index(), jax.process_count()


def _labels(records: Sequence[rec.ClipRecord], space: labels_lib.LabelSpace | None,
            unknown: int | None) -> np.ndarray:
  if space is None:
    return np.full(len(records), -1, np.int32)
  return np.asarray(space.labels(records, default=unknown), np.int32)


def _base(records, space, config, unknown, shard_index, shard_count) -> grain.MapDataset:
  if not records:
    raise ValueError("no records to build a pipeline from")
  if shard_index is None or shard_count is None:
    shard_index, shard_count = default_shard()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  load = _LoadClip([r.path for r in records], _labels(records, space, unknown), config)
  return grain.MapDataset.range(len(records))[shard_index::shard_count], load


def _finish(ds: grain.MapDataset, worker_count: int) -> grain.IterDataset:
  it = ds.to_iter_dataset()
  if worker_count > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (grain 0.2.18)
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it


def training_dataset(records: Sequence[rec.ClipRecord], space: labels_lib.LabelSpace, *,
                     batch_size: int, seed: int, config: WavConfig = WavConfig(),
                     num_epochs: int | None = None, worker_count: int = 0,
                     shard_index: int | None = None, shard_count: int | None = None
                     ) -> grain.IterDataset:
  """Shuffled, repeated, `drop_remainder` batches of this host's shard (see module doc).

  Every record must have a class in `space` (KeyError naming the record otherwise).
  """
  ds, load = _base(records, space, config, None, shard_index, shard_count)
  if len(ds) < batch_size:
    raise ValueError(f"{len(ds)} training clips in this process's shard of {len(records)}, fewer than its batch of "
                     f"{batch_size} clips: lower the batch size (config.train.batch_size, over all processes)")
  ds = ds.shuffle(seed=seed).repeat(num_epochs).map(load)
  return _finish(ds.batch(batch_size, drop_remainder=True), worker_count)


def inference_dataset(records: Sequence[rec.ClipRecord], space: labels_lib.LabelSpace | None,
                      *, batch_size: int, config: WavConfig = WavConfig(), worker_count: int = 0,
                      shard_index: int | None = None, shard_count: int | None = None
                      ) -> grain.IterDataset:
  """Ordered single pass; last batch padded, `valid` marks real rows; unknown classes -> -1."""
  ds, load = _base(records, space, config, -1, shard_index, shard_count)
  ds = ds.map(load).batch(batch_size, drop_remainder=False).map(_PadBatch(batch_size))
  return _finish(ds, worker_count)
