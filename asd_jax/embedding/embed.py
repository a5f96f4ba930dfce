"""Every clip of a dataset embedded with a training workdir's model: the library behind `python -m asd_jax.embed`.

The parameters are the workdir's latest training checkpoint (LoRA factors merged with the alpha it was trained
with; `asd_jax.finetuning.restore`), else the network before training (converted encoders or random tiny ones,
with a warning); `frozen=True` asks for the latter explicitly (the pipeline's frozen reference models). Writes
`embeddings.npz` and `embeddings_records.json` (see `asd_jax.embedding.store`) into the workdir.

As in training: config values that make no sense (`asd_jax.config_checks`) are refused before anything is read,
and the workdir is locked (`asd_jax.workdir_lock`) before its checkpoints are read, so a second run on it (an
`embed` or a `train` writing the checkpoints being read) is refused, naming the process that holds it.
"""

from __future__ import annotations

import os

import jax
import ml_collections
from absl import logging

from asd_jax import config_checks
from asd_jax import workdir_lock
from asd_jax.data import datasets
from asd_jax.data import layout
from asd_jax.embedding import extract
from asd_jax.embedding import store
from asd_jax.finetuning import restore


def embed(config: ml_collections.ConfigDict, workdir: str, *, all_layers: bool = True, out: str = "",
          progress: bool = True, frozen: bool = False) -> str:
  """Writes the outputs of every clip of `config.data.root`; returns the .npz path (default
  WORKDIR/embeddings.npz)."""
  config_checks.check(config)
  workdir = os.path.abspath(workdir)
  with workdir_lock.hold(workdir, "embed", enabled=jax.process_index() == 0):
    return _embed(config, workdir, all_layers=all_layers, out=out, progress=progress, frozen=frozen)


def _embed(config: ml_collections.ConfigDict, workdir: str, *, all_layers: bool, out: str, progress: bool,
           frozen: bool) -> str:
  root = os.path.abspath(config.data.root) if config.data.root else ""
  # First: a missing dataset, or a clip the channel policy cannot read, fails before any compute.
  clips = layout.scan_dataset(root, channels=datasets.wav_config(config.data).channels)
  if frozen:
    network, params, source = restore.untrained_params(config)
  else:
    network, params, source = restore.embedding_params(config, workdir)
  outputs, batch_size = extract.embed_records(config, network, params, clips, all_layers=all_layers,
                                              progress=progress)
  out = out or os.path.join(workdir, store.ARRAYS)
  if jax.process_index() == 0:  # every process holds every clip's outputs; one writes them
    store.write(out, outputs, clips, source=source, network=network.name, batch_size=batch_size)
    logging.info("wrote %s (%d clips, from %s)", out, len(clips), source)
  return out
