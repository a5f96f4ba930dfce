"""Data parallelism with a one-axis device mesh: batches split over "data", parameters replicated.

The current JAX recipe (pmap is the legacy path): `jax.make_mesh` over all devices, `NamedSharding`s for
inputs and state, and a plain `jax.jit`; XLA inserts the gradient all-reduce because the loss is a mean over
the global batch. The mesh uses `AxisType.Auto` so arrays without an explicit sharding still compose.
On several hosts every process feeds only its own shard of the batch
(`jax.make_array_from_process_local_data`) after `jax.distributed.initialize()`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(enabled: bool) -> None:
  """Joins the multi-host job (coordinator address etc. from the environment, e.g. on TPU pods)."""
  if enabled:
    jax.distributed.initialize()


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named "data" over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
  devices = mesh.devices.size
  if global_batch % devices:
    raise ValueError(f"global batch size {global_batch} is not divisible by the {devices} devices of the mesh; "
                     f"set config.train.batch_size to a multiple of {devices}")


def local_batch(global_batch: int) -> int:
  """This process's share of a global batch (every process feeds the same number of rows)."""
  processes = jax.process_count()
  if global_batch % processes:
    raise ValueError(f"batch size {global_batch} is not divisible by the {processes} processes")
  return global_batch // processes


def put_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Global arrays from this process's part of the batch (`[local_batch, ...]` per key)."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Copies every leaf of `tree` to every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))
