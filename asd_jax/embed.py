r"""Writes per-clip embeddings of a trained (or only converted) model for every clip of a dataset.

  python -m asd_jax.embed --config=configs/leat.py --workdir=DIR [--layers=all|last] [--out=FILE]
  python -m asd_jax.embed --config=configs/dual_branch.py --workdir=DIR

Uses the latest training checkpoint in `DIR/checkpoints` (LoRA factors merged into the weights); without
one, the converted encoder(s) of the config (or random tiny encoders, for demos). Writes `embeddings.npz`
(float32, one row per clip) and `embeddings_records.json` (`{"source", "system", "records"}`, the clips in
the same order). The keys of `embeddings.npz`:

  single encoder (beats, eat):
    embedding         [clips, D]          the pooled final layer (the utterance embedding)
    layer_embeddings  [clips, L, D]       with --layers=all: the pooled output of every layer
  dual_branch:
    embedding         [clips, Db + De]    the fused embedding kNN scores: concat(BEATs, EAT) pooled final layers
    layers_beats      [clips, Lb, Db]     with --layers=all: every BEATs layer pooled (beats_pool)
    layers_eat        [clips, Le, De]     with --layers=all: every EAT layer pooled (eat_pool)

so `embedding == concat(layers_beats[:, -1], layers_eat[:, -1])`. Batches are fixed-size (the last one
padded), so the forward pass compiles once (ahead of the first batch; compile time is logged on its own);
they are split over all devices and read ahead by a background thread (`config.data.prefetch`).
`config.embed.autotune` first measures batch sizes on the devices and uses the fastest. On several hosts
each process reads and embeds its own shard of the clips, the outputs are gathered to every process, and
process 0 writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
import tqdm
from absl import app, flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from asd_jax import cli
from asd_jax.runtime import autotune
from asd_jax.training import checkpoints
from asd_jax.models import networks
from asd_jax.training import experiment
from asd_jax.training import lora
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
  logging.info("embedded %d clips in %.1f s after compilation (%.1f clips/s)", int(seen.sum()), run_s,
               seen.sum() / max(run_s, 1e-9))
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
               ", ".join(f"{size}: {'OOM' if rate is None else f'{rate:.1f}'}" for size, rate in tried))
  return best


# Config fields that shape the trained parameters: embedding a checkpoint with other values is an error.
# (LoRA's alpha only scales the merge: the saved value is used. The optimiser's settings come from the
# checkpoint, since they only shape the optimiser state that is restored alongside.)
MODEL_FIELDS = ("config.model", "config.lora.enabled", "config.lora.rank", "config.lora.targets", "config.loss")


def _restore_trained(config, ckpt: checkpoints.Checkpointer) -> tuple[networks.Network, Any, str]:
  """`(system, merged params, source)` of the latest checkpoint, after checking `MODEL_FIELDS`."""
  meta = ckpt.restore_meta()
  saved = meta["config"]
  checkpoints.check_same_run(ckpt.directory, meta, {"config": json.loads(config.to_json_best_effort())},
                             MODEL_FIELDS, hint="Embed with the config the checkpoint was trained with.")
  alpha = saved["lora"]["alpha"]
  if config.lora.alpha != alpha:
    logging.warning("config.lora.alpha=%s but %s was trained with %s: merging LoRA with %s", config.lora.alpha,
                    ckpt.directory, alpha, alpha)
  restore_config = config.copy_and_resolve_references()
  restore_config.optim.update(saved["optim"])
  system = networks.build_network(config, len(meta["label_space"]["classes"]))
  run = experiment.create_run(restore_config, system, jax.random.key(config.seed), meta["num_steps"], abstract=True)
  state, _, _ = ckpt.restore(checkpoints.abstract_like(run.state, shd.replicated(shd.data_mesh())))
  return system, lora.merge_lora(state.params, alpha=alpha), f"{ckpt.directory} step {int(state.step)}"


def model_params(config, workdir: str) -> tuple[networks.Network, Any, str]:
  """`(system, params, source)`: trained weights (LoRA merged with the saved alpha) from the workdir's latest
  checkpoint, else the converted encoder(s) of the config or random ones, with heads sized for one class
  (unused here). A checkpoint trained with other `MODEL_FIELDS` is a ValueError naming each field."""
  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  rng = jax.random.key(config.seed)
  if os.path.isdir(ckpt_dir):
    ckpt = checkpoints.Checkpointer(ckpt_dir)
    try:
      if ckpt.latest_step() is not None:
        return _restore_trained(config, ckpt)
    finally:
      ckpt.close()
  system = networks.build_network(config, 1)
  tree, _ = experiment.init_trainable(config, system, rng)
  source = ", ".join(source for _, source, _ in system.pretrained) or "random initialisation"
  logging.warning("no training checkpoint in %s: embedding with %s", ckpt_dir, source)
  return system, tree["model"], source


def embed(config, workdir: str, *, all_layers: bool = True, out: str = "", progress: bool = True) -> str:
  """Writes the embeddings of every clip of `config.data.root` (keys in the module docstring); returns the
  .npz path."""
  from asd_jax.training import data as train_data

  workdir = os.path.abspath(workdir)
  clips, batches = train_data.embedding_batches(config)  # first: a missing dataset fails before any compute
  system, params, source = model_params(config, workdir)
  mesh = shd.data_mesh()
  params = shd.replicate(params, mesh)
  forward = make_forward(system.outputs, mesh, all_layers, microbatch_lib.resolve(config.embed.microbatch))
  batch_size = tuned_batch_size(config, forward, params, mesh)
  if batch_size != config.embed.batch_size:
    config = config.copy_and_resolve_references()
    config.embed.batch_size = batch_size
    clips, batches = train_data.embedding_batches(config)
  outputs = embed_batches(forward, params, batches, batch_size=batch_size, mesh=mesh, num_clips=len(clips),
                          progress=progress, prefetch=config.data.prefetch)
  out = out or os.path.join(workdir, "embeddings.npz")
  if jax.process_index() == 0:  # every process holds every clip's outputs; one writes them
    os.makedirs(os.path.dirname(out), exist_ok=True)
    np.savez(out, **outputs)
    with open(os.path.splitext(out)[0] + "_records.json", "w") as f:
      json.dump({"source": source, "system": system.name, "records": [dataclasses.asdict(c) for c in clips]}, f)
    logging.info("wrote %s (%d clips, from %s)", out, len(clips), source)
  return out


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program, so that importing the module
  (from tests, the pipeline or another CLI) never defines flags twice."""
  config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).")
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints, label space); output goes here.")
  flags.DEFINE_enum("layers", "all", ["all", "last"], "Also write every layer's pooled output.")
  flags.DEFINE_string("out", "", "Output .npz (default: WORKDIR/embeddings.npz).")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  print(embed(flags.FLAGS.config, flags.FLAGS.workdir, all_layers=flags.FLAGS.layers == "all",
              out=flags.FLAGS.out))


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; bad input (missing or wrong-kind file, config typo) exits with "error: <message>"
