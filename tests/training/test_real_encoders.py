"""LoRA fine-tuning steps on the real tiny BEATs and EAT (with their fbank front ends), as configs/demo.py."""

import flax.traverse_util as tu
import jax
import numpy as np
import pytest

from asd_jax.models import networks

from asd_jax.finetuning import fine_tune
from asd_jax.runtime import sharding as shd
from asd_jax.training import optimizer
from asd_jax.training import train_step as ts
from configs import demo


@pytest.mark.slow  # ~25 s each on 2 busy cores: fbank + encoder gradients compile slowly
@pytest.mark.parametrize("encoder", ["beats", "eat"])
def test_lora_steps_on_tiny_encoder(encoder):
  config = demo.get_config()
  config.model.network = encoder
  config.data.clip_seconds = 1.0
  run = fine_tune.setup(config, networks.build_network(config, num_classes=3), jax.random.key(0),
                              total_steps=10)
  labels = run.labels
  mesh = shd.data_mesh()
  step = ts.jit_train_step(run.train_step(), mesh, donate=False)
  wav = np.random.default_rng(0).normal(scale=0.1, size=(4, networks.clip_samples(config))).astype(np.float32)
  batch = shd.put_batch({"wav": wav, "label": np.array([0, 1, 2, 0], np.int32)}, mesh)
  state = shd.replicate(run.state, mesh)
  new = state
  for _ in range(2):
    new, metrics = step(new, batch, jax.random.key(1))
  assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  before, after = tu.flatten_dict(jax.device_get(state.params)), tu.flatten_dict(jax.device_get(new.params))
  for keys, label in tu.flatten_dict(labels).items():
    changed = not np.array_equal(before[keys], after[keys])
    assert changed == (label == optimizer.TRAINABLE), keys
