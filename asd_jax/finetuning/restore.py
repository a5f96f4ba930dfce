"""A trained model's plain parameters from its workdir: the latest checkpoint, LoRA factors merged.

What embedding extraction and the detector export read. `trained_params` checks the checkpoint against the
config (`fine_tune.MODEL_FIELDS`) before restoring anything, and merges LoRA with the alpha the model was
trained with; `trained_tree` gives the same before the merge (a detector stores LoRA factors apart).
`embedding_params` falls back, without a checkpoint, to the network's parameters before training (converted
encoders, or random tiny ones in demos).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from asd_jax.checkpoints import train_state
from asd_jax.finetuning import fine_tune
from asd_jax.models import lora_factors
from asd_jax.models import networks
from asd_jax.runtime import sharding as shd
from asd_jax.training import loop


def _restore(config: ml_collections.ConfigDict, ckpt: train_state.Checkpointer
             ) -> tuple[networks.Network, Any, float, str]:
  """`(network, trainable tree {"model", ["lora"]}, LoRA alpha it was trained with, source)` of the latest step."""
  meta = ckpt.restore_meta()
  saved = meta["config"]
  train_state.check_same_run(ckpt.directory, meta, {"config": json.loads(config.to_json_best_effort())},
                             fine_tune.MODEL_FIELDS, hint="Use the config the checkpoint was trained with.")
  alpha = saved["lora"]["alpha"]
  if config.lora.alpha != alpha:
    logging.warning("config.lora.alpha=%s but %s was trained with %s: merging LoRA with %s", config.lora.alpha,
                    ckpt.directory, alpha, alpha)
  restore_config = config.copy_and_resolve_references()
  restore_config.optim.update(saved["optim"])
  network = networks.build_network(config, len(meta["label_space"]["classes"]))
  built = fine_tune.setup(restore_config, network, jax.random.key(config.seed), meta["num_steps"], abstract=True)
  state, _, _ = ckpt.restore(train_state.abstract_like(built.state, shd.replicated(shd.data_mesh())))
  return network, state.params, alpha, f"{ckpt.directory} step {int(state.step)}"


def trained_tree(config: ml_collections.ConfigDict, workdir: str) -> tuple[networks.Network, Any, float, str] | None:
  """`(network, trainable tree {"model", ["lora"]}, LoRA alpha, source)` of the latest checkpoint in
  `workdir/checkpoints`, LoRA factors apart (what a detector stores), None without a checkpoint.

  Raises ValueError naming each field when the checkpoint was trained with other `fine_tune.MODEL_FIELDS`.
  """
  ckpt_dir = loop.checkpoint_dir(workdir)
  if not os.path.isdir(ckpt_dir):
    return None
  ckpt = train_state.Checkpointer(ckpt_dir)
  try:
    if ckpt.latest_step() is None:
      return None
    return _restore(config, ckpt)
  finally:
    ckpt.close()


def trained_params(config: ml_collections.ConfigDict, workdir: str) -> tuple[networks.Network, Any, str] | None:
  """`(network, plain params, source)` of the latest checkpoint in `workdir/checkpoints` (`trained_tree` with the
  LoRA factors merged, `lora_factors.merge_lora`), None without one."""
  restored = trained_tree(config, workdir)
  if restored is None:
    return None
  network, tree, alpha, source = restored
  return network, lora_factors.merge_lora(tree, alpha=alpha), source


def untrained_params(config: ml_collections.ConfigDict) -> tuple[networks.Network, Any, str]:
  """`(network, params, source)` before any training: the converted encoder(s) of the config, or random ones
  (seeded by `config.seed`), with a head sized for one class (no output of the embedding reads it)."""
  network = networks.build_network(config, 1)
  params = networks.initial_params(network, jax.random.key(config.seed))
  source = ", ".join(source for _, source, _ in network.pretrained) or (
      "no parameters" if not jax.tree.leaves(params) else "random initialisation")
  return network, params, source


def embedding_params(config: ml_collections.ConfigDict, workdir: str) -> tuple[networks.Network, Any, str]:
  """`trained_params`, else (with a warning) `untrained_params`."""
  trained = trained_params(config, workdir)
  if trained is not None:
    return trained
  network, params, source = untrained_params(config)
  logging.warning("no training checkpoint in %s: embedding with %s", loop.checkpoint_dir(workdir), source)
  return network, params, source
