"""Inference over a batch in slices: each device runs the forward pass on a few clips at a time.

On CPU an encoder is faster clip by clip than on a whole batch at once: at batch 8, BEATs' matmuls (3,968
rows instead of 496) and its attention weights (8 x 12 x 496 x 496 floats, 94 MB) fall out of the caches.
Mapping the forward pass over slices of the batch (`jax.lax.map`, one compiled body) gives the same numbers
faster there (see BENCHMARKS.md); on accelerators a whole batch is what keeps the chip busy, so the default
(`AUTO`) slices on CPU only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from asd_jax.runtime import sharding as shd

AUTO = -1  # config value: one clip at a time on CPU, the whole per-device batch elsewhere


def resolve(microbatch: int) -> int:
  """Clips per slice for a config value: `AUTO` -> 1 on CPU, 0 (no slicing) elsewhere; else the value."""
  if microbatch == AUTO:
    return 1 if jax.default_backend() == "cpu" else 0
  if microbatch < 0:
    raise ValueError(f"microbatch must be >= 0 (0 = the whole batch at once) or {AUTO} (auto), got {microbatch}")
  return microbatch


def in_slices(fn: Callable[[jax.Array], Any], size: int) -> Callable[[jax.Array], Any]:
  """`fn: x [batch, ...] -> pytree of [batch, ...]` computed `size` rows at a time, one slice after another.

  `size` 0, or a batch of at most `size` rows, calls `fn` on the whole batch. The batch must be a multiple
  of `size` (a ValueError when traced otherwise). Each row's outputs are those of `fn` on that row alone,
  so `fn` must treat rows independently (inference: no batch statistics, no dropout across rows).
  """

  def sliced(x: jax.Array) -> Any:
    batch = x.shape[0]
    if size == 0 or batch <= size:
      return fn(x)
    if batch % size:
      raise ValueError(f"a batch of {batch} rows does not split into slices of {size} (config.embed.microbatch)")
    outputs = jax.lax.map(fn, x.reshape(batch // size, size, *x.shape[1:]))
    return jax.tree.map(lambda y: y.reshape(batch, *y.shape[2:]), outputs)

  return sliced


def per_device_slices(fn: Callable[[Any, jax.Array], Any], mesh: Mesh, size: int) -> Callable[[Any, jax.Array],
                                                                                                 Any]:
  """`fn(params, x [batch, ...])` with `x` split over `mesh`'s data axis and each device running its own rows
  `size` at a time (`in_slices` inside `jax.shard_map`; params replicated). `size` 0 returns `fn` as it is."""
  if size == 0:
    return fn

  def local(params, x):
    return in_slices(lambda rows: fn(params, rows), size)(x)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(shd.DATA_AXIS)), out_specs=P(shd.DATA_AXIS))
