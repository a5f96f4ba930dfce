"""Benchmark: one training step of full vs LoRA fine-tuning of a mid-size BEATs on this machine.

Reports median step time (and spread), XLA's memory estimate for the step (arguments + temporaries +
outputs, from `compiled.memory_analysis()`), and the bytes of optimiser state each variant keeps.
Both variants run in one process on the same batch, so the ratios are the meaningful numbers.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np

from benchmarks import common


def _variant(lora_enabled: bool, layers: int, dim: int, batch: int, seconds: float):
  from asd_jax.models import beats
  from asd_jax.training import experiment
  from asd_jax.training import sharding as shd
  from asd_jax.training import train_step as ts
  from configs import common as base

  config = base.get_config()
  config.model.preset = "tiny"
  config.model.dtype = "float32"
  config.data.clip_seconds = seconds
  config.lora.enabled = lora_enabled
  config.lora.rank = 16
  config.lora.alpha = 16.0
  arch = dataclasses.replace(beats.BEATS_TINY, encoder_layers=layers, encoder_embed_dim=dim,
                             encoder_ffn_embed_dim=4 * dim, encoder_attention_heads=max(dim // 64, 1), embed_dim=dim)
  system = experiment.classifier_system(config, experiment.build_model(config.model, arch, num_classes=16))
  run = experiment.create_run(config, system, jax.random.key(0), total_steps=100)
  tree, labels = run.state.params, run.labels
  mesh = shd.data_mesh(jax.devices()[:1])
  step = ts.jit_train_step(run.train_step(), mesh, donate=False)
  wav = np.random.default_rng(0).normal(scale=0.1, size=(batch, experiment.clip_samples(config))).astype(np.float32)
  data = shd.put_batch({"wav": wav, "label": np.arange(batch, dtype=np.int32) % 16}, mesh)
  state = shd.replicate(run.state, mesh)
  rng = jax.random.key(1)
  compiled = step.lower(state, data, rng).compile()
  mem = compiled.memory_analysis()
  step_bytes = None
  if mem is not None:
    step_bytes = mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
  opt_bytes = sum(x.nbytes for x in jax.tree.leaves(state.opt_state))
  trainable = sum(x.size for x, l in zip(jax.tree.leaves(tree), jax.tree.leaves(labels)) if l == "trainable")
  median, spread = common.time_call(lambda: jax.block_until_ready(compiled(state, data, rng)), repeats=3 if
                                    batch <= 2 else 5)
  return median, spread, step_bytes, opt_bytes, trainable


def run(quick: bool = False) -> str:
  layers, dim, batch, seconds = (1, 128, 2, 1.0) if quick else (6, 512, 4, 5.0)
  rows = []
  results = {}
  for name, enabled in (("full", False), ("LoRA r=16 (q, v, out)", True)):
    median, spread, step_bytes, opt_bytes, trainable = _variant(enabled, layers, dim, batch, seconds)
    results[name] = median
    rows.append([name, f"{trainable:,}", median, spread,
                 "n/a" if step_bytes is None else f"{step_bytes / 2**20:.0f}", f"{opt_bytes / 2**20:.1f}"])
  ratio = results["full"] / results["LoRA r=16 (q, v, out)"]
  return "\n".join([
      "## Fine-tuning step: full vs LoRA",
      "",
      common.machine_description(),
      "",
      f"BEATs layout, {layers} layers x {dim} dim, batch {batch} x {seconds:g} s clips (fbank in the step), "
      f"float32, one device. Full / LoRA step time: {ratio:.2f}x.",
      "",
      common.markdown_table(["variant", "trainable params", "step s (median)", "spread s",
                             "step memory MiB (XLA)", "optimiser state MiB"], rows),
  ])


if __name__ == "__main__":
  print(run())
