"""The one embedding path: wav files -> fixed-shape batches -> a network's jitted forward -> outputs per clip.

Used by the embed program and the pipeline (every clip of a dataset) and by the exported detector (new
recordings), so a clip's embedding is computed the same way wherever it is computed. `embed_records` reads the
clips with the Grain inference dataset (`asd_jax.data.datasets`: same decoding, resampling, crop and repeat
padding), in batches of `config.embed.batch_size` clips, the last one padded, so the forward pass always has
the same shape and compiles once (ahead of the first batch; compile time is logged on its own). Batches are
split over all devices and read ahead by a background thread (`config.data.prefetch`).

Batch composition does not change a clip's outputs: every batch has the same shape, each row of a network's
outputs depends on its own clip only, and on CPU (`config.embed.microbatch`, auto) each device runs its clips
one at a time through the same compiled body (`runtime.microbatch`), so a clip embedded alone and the same clip
embedded among others give the same float32 values. `config.embed.autotune` first measures batch sizes on the
devices and uses the fastest. `Embedder` keeps the compiled forward pass for repeated calls (the detector), for
clips read from files or for waveforms already read (the windows of a long recording). On several hosts each
process reads and embeds its own shard of the clips and the outputs are gathered to every process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging
from jax.experimental import multihost_utils

from asd_jax.data import datasets
from asd_jax.data import records as records_lib
from asd_jax.models import networks
from asd_jax.runtime import autotune
from asd_jax.runtime import microbatch as microbatch_lib
from asd_jax.runtime import prefetch as prefetch_lib
from asd_jax.runtime import sharding as shd


def make_forward(outputs, mesh, all_layers: bool, microbatch: int = 0):
  """Jitted `forward(params, wav [batch, samples]) -> {name: [batch, ...]}` (batch sharded in and out), where
  `outputs` is a system's `(params, wav, all_layers) -> dict` (see `networks.Network.outputs`).

  `microbatch` > 0: each device runs its rows that many at a time (`microbatch.per_device_slices`; same
  outputs, faster on CPU); the per-device batch must be a multiple of it. Resolve the config's value with
  `microbatch.resolve(config.embed.microbatch)`.
  """

  def forward(params, wav):
    return outputs(params, wav, all_layers)

  return jax.jit(microbatch_lib.per_device_slices(forward, mesh, microbatch),
                 in_shardings=(shd.replicated(mesh), shd.batch_sharded(mesh)), out_shardings=shd.batch_sharded(mesh))


def _gather(tree):
  """Global numpy values of batch-sharded arrays (on several processes: gathered from all of them)."""
  return multihost_utils.process_allgather(tree, tiled=True)


def _any_process(flag: bool) -> bool:
  """True if `flag` is true on any process (every process must call it)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def embed_batches(forward, params, batches: Iterable[dict[str, np.ndarray]], *, batch_size: int, mesh,
                  num_clips: int, progress: bool = True, prefetch: int = 2) -> dict[str, np.ndarray]:
  """Runs `forward` over this process's `batches` and returns each output as `[num_clips, ...]` ordered by index.

  Args:
    forward: `make_forward(...)`, compiled here once ahead of the first batch (the compile time is logged
      apart from the run time), or an already compiled executable. Every batch has the same shape, so
      nothing recompiles.
    params: replicated over `mesh`.
    batches: this process's batches `{"wav": [b, samples], "index": [b], optional "valid": [b]}`, b <= the
      local batch (`batch_size / jax.process_count()`); short batches are padded, rows with `valid` False
      are dropped. `index` is the clip's position in the global list of `num_clips` clips.
    batch_size: global batch (over all processes), divisible by the mesh's device count.
    prefetch: batches read, padded and put on the devices ahead by a background thread (0 = in turn).

  On several processes (multi-host), every process calls this with its own shard of the clips; the outputs
  and indices of each step are gathered from all processes (`process_allgather`), so every process returns
  every clip's outputs (write them from process 0 only). A process that runs out of batches before the
  others feeds all-invalid padding batches until all are done, so the collective steps stay in lockstep.
  On one process this is a plain loop over `batches`.
  """
  shd.check_batch_size(batch_size, mesh)
  local_batch = batch_size // jax.process_count()

  def prepare(batch):  # host work and the transfer: runs ahead of the forward pass in the prefetch thread
    wav, index = np.asarray(batch["wav"], np.float32), np.asarray(batch["index"], np.int32)
    valid = np.asarray(batch.get("valid", np.ones(len(index), bool)), bool)
    if len(index) > local_batch:
      raise ValueError(f"batch of {len(index)} clips is larger than the local batch size {local_batch} "
                       f"(global {batch_size} over {jax.process_count()} processes)")
    pad = local_batch - len(index)
    if pad:
      wav = np.concatenate([wav, np.zeros((pad,) + wav.shape[1:], wav.dtype)])
      index = np.concatenate([index, np.zeros(pad, index.dtype)])
      valid = np.concatenate([valid, np.zeros(pad, bool)])
    return shd.put_batch({"wav": wav}, mesh)["wav"], index, valid

  outputs: dict[str, np.ndarray] = {}
  seen = np.zeros(num_clips, bool)
  padding = None
  compiled = None if hasattr(forward, "lower") else forward
  compile_s, start = 0.0, time.perf_counter()
  with tqdm.tqdm(total=num_clips, unit="clip", disable=not progress or jax.process_index() != 0,
                 dynamic_ncols=True) as bar, \
       prefetch_lib.DevicePrefetcher(iter(batches), prepare, size=prefetch) as prepared:
    while True:
      item = next(prepared, None)
      if not _any_process(item is not None):
        break
      if item is None:  # this process is done, others are not: an all-invalid batch keeps them in step
        if padding is None:
          raise ValueError(f"process {jax.process_index()} got no clips to embed while others did: fewer clips "
                           f"({num_clips}) than processes ({jax.process_count()})?")
        item = padding
      wav, index, valid = item
      if padding is None:
        padding = prepare({"wav": np.zeros((0, wav.shape[1]), np.float32), "index": np.zeros(0, np.int32)})
      if compiled is None:
        t0 = time.perf_counter()
        compiled = forward.lower(params, wav).compile()
        compile_s = time.perf_counter() - t0
        logging.info("embedding forward compiled in %.1f s (global batch %d)", compile_s, batch_size)
      on_mesh = shd.put_batch({"index": index, "valid": valid}, mesh)
      result, on_mesh = _gather((compiled(params, wav), on_mesh))
      keep = np.flatnonzero(on_mesh["valid"])
      rows = on_mesh["index"][keep]
      for key, value in result.items():
        if key not in outputs:
          outputs[key] = np.zeros((num_clips,) + value.shape[1:], np.float32)
        outputs[key][rows] = value[keep]
      seen[rows] = True
      bar.update(len(keep))
  run_s = time.perf_counter() - start - compile_s
  logging.info("embedded %d clips in %.1f s after compilation (%s)", int(seen.sum()), run_s,
               autotune.speed(int(seen.sum()), run_s))
  if not seen.all():
    raise ValueError(f"{int((~seen).sum())} of {num_clips} clips got no embedding (first missing index "
                     f"{int(np.flatnonzero(~seen)[0])}): the batch iterator skipped clips")
  return outputs


def tuned_batch_size(config, forward, params, mesh) -> int:
  """`config.embed.batch_size`, or with `config.embed.autotune` the fastest measured size that fits."""
  if not config.embed.autotune:
    return config.embed.batch_size
  best, tried = autotune.pick_batch_size(
      autotune.forward_throughput(forward, params, networks.clip_samples(config), mesh),
      autotune.candidate_batch_sizes(mesh.devices.size))
  logging.info("autotuned embedding batch size: %d (clips/s by size: %s)", best,
               ", ".join(f"{size}: {'OOM' if rate is None else f'{rate:.3g}'}" for size, rate in tried))
  return best


class Embedder:
  """A network with its parameters on the devices and its forward pass compiled once: `embedder(records)` gives
  the outputs of any clips, batch after batch of the same shape (`config.embed.batch_size`, the last padded).

  Args:
    config: the model's config (`data` says how clips are read, `embed` the batch size, microbatch, autotune).
    network, params: the network and its plain (LoRA-merged) parameters.
    all_layers: also every layer's pooled output (see `networks.Network.outputs`).
  """

  def __init__(self, config: ml_collections.ConfigDict, network: networks.Network, params: Any, *,
               all_layers: bool):
    self.config = config
    self.mesh = shd.data_mesh()
    self.params = shd.replicate(params, self.mesh)
    forward = make_forward(network.outputs, self.mesh, all_layers, microbatch_lib.resolve(config.embed.microbatch))
    self.batch_size = tuned_batch_size(config, forward, self.params, self.mesh)
    local = shd.local_batch(self.batch_size)
    wav = shd.put_batch({"wav": np.zeros((local, networks.clip_samples(config)), np.float32)}, self.mesh)["wav"]
    t0 = time.perf_counter()
    self.forward = forward.lower(self.params, wav).compile()
    logging.info("embedding forward compiled in %.1f s (global batch %d)", time.perf_counter() - t0,
                 self.batch_size)

  def __call__(self, records: Sequence[records_lib.ClipRecord], *, progress: bool = False) -> dict[str, np.ndarray]:
    """{output name: [clips, ...] float32} for `records`, rows in their order."""
    dataset = datasets.inference_dataset(list(records), None, batch_size=shd.local_batch(self.batch_size),
                                         config=datasets.wav_config(self.config.data),
                                         worker_count=self.config.data.num_workers)
    return embed_batches(self.forward, self.params, iter(dataset), batch_size=self.batch_size, mesh=self.mesh,
                         num_clips=len(records), progress=progress, prefetch=self.config.data.prefetch)

  def waveforms(self, wavs: np.ndarray, *, progress: bool = False) -> dict[str, np.ndarray]:
    """{output name: [clips, ...] float32} for waveforms already read (`wavs` [clips, clip samples], e.g. the
    windows of a long recording), in the same batches and compiled forward pass as clips read from files."""
    wavs = np.asarray(wavs, np.float32)
    if wavs.ndim != 2 or wavs.shape[1] != networks.clip_samples(self.config):
      raise ValueError(f"waveforms of shape {wavs.shape}; expected [clips, {networks.clip_samples(self.config)}]")
    local = shd.local_batch(self.batch_size)
    mine = np.arange(jax.process_index(), len(wavs), jax.process_count())  # this process's shard
    batches = ({"wav": wavs[mine[i:i + local]], "index": mine[i:i + local].astype(np.int32)}
               for i in range(0, len(mine), local))
    return embed_batches(self.forward, self.params, batches, batch_size=self.batch_size, mesh=self.mesh,
                         num_clips=len(wavs), progress=progress, prefetch=self.config.data.prefetch)


def embed_records(config: ml_collections.ConfigDict, network: networks.Network, params: Any,
                  records: Sequence[records_lib.ClipRecord], *, all_layers: bool, progress: bool = True
                  ) -> tuple[dict[str, np.ndarray], int]:
  """`({output name: [clips, ...] float32}, batch size used)`: `network`'s outputs for every clip of `records`
  (an `Embedder` used once)."""
  embedder = Embedder(config, network, params, all_layers=all_layers)
  return embedder(records, progress=progress), embedder.batch_size
