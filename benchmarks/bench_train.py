"""Benchmark: one fine-tuning step, full vs LoRA, and what remat and buffer donation change.

A BEATs-layout encoder of mid size (full size takes minutes per step on 2 CPU cores) with the ArcFace
classifier, the waveform front end inside the step, float32, one device, the real `jit_train_step`. Per
variant: median step time and spread, clips/s, the step's memory (XLA's estimate for the compiled step:
arguments + outputs + temporaries - donated buffers; on GPU also the device's peak bytes in use), and the
bytes of optimiser state. All variants run in one process on the same batch, so the ratios are the
meaningful numbers. Full-size figures on an accelerator come from `benchmarks/device_check.sh`.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from benchmarks import common

NUM_CLASSES = 16


def _variant(*, lora_enabled: bool, remat: bool, donate: bool, layers: int, dim: int, batch: int,
             seconds: float) -> dict:
  """The compiled step of one variant, a blocking `step()` that feeds each new state to the next call, and its
  sizes."""
  from asd_jax.finetuning import fine_tune
  from asd_jax.models import beats
  from asd_jax.models import networks
  from asd_jax.runtime import sharding as shd
  from asd_jax.training import train_step as ts
  from configs import common as base

  config = base.get_config()
  config.model.preset = "tiny"
  config.model.dtype = "float32"
  config.model.remat = remat
  config.data.clip_seconds = seconds
  config.lora.enabled = lora_enabled
  config.lora.rank = 16
  config.lora.alpha = 16.0
  arch = dataclasses.replace(beats.BEATS_ITER3_PLUS, encoder_layers=layers, encoder_embed_dim=dim,
                             encoder_ffn_embed_dim=4 * dim, encoder_attention_heads=max(dim // 64, 1), embed_dim=dim)
  network = networks.classifier_network_of(config, networks.build_classifier(config.model, arch, NUM_CLASSES))
  run = fine_tune.setup(config, network, jax.random.key(0), total_steps=100)
  mesh = shd.data_mesh(jax.devices()[:1])
  step = ts.jit_train_step(run.train_step(), mesh, donate=donate)
  wav = np.random.default_rng(0).normal(scale=0.1, size=(batch, networks.clip_samples(config))).astype(np.float32)
  data = shd.put_batch({"wav": wav, "label": np.arange(batch, dtype=np.int32) % NUM_CLASSES}, mesh)
  state = shd.replicate(run.state, mesh)
  rng = jax.random.key(1)
  compiled = step.lower(state, data, rng).compile()
  holder = {"state": state}

  def one_step():  # a donated state is consumed: each step feeds on the previous one's output
    holder["state"], metrics = compiled(holder["state"], data, rng)
    jax.block_until_ready(metrics)

  labels = jax.tree.leaves(run.labels)
  return {"step": one_step, "xla_bytes": common.xla_memory_bytes(compiled), "device_peak": common.device_peak_bytes(),
          "opt_bytes": sum(x.nbytes for x in jax.tree.leaves(holder["state"].opt_state)),
          "trainable": sum(x.size for x, l in zip(jax.tree.leaves(run.state.params), labels) if l == "trainable")}


VARIANTS = (  # name, LoRA, remat, donate
    ("full", False, False, True),
    ("full, no donation", False, False, False),
    ("full, remat", False, True, True),
    ("LoRA r=16 (q, v, out)", True, False, True),
)


def run(quick: bool = False) -> str:
  layers, dim, batch, seconds, repeats = (1, 128, 2, 1.0, 2) if quick else (6, 512, 4, 5.0, 3)
  results = {name: _variant(lora_enabled=l, remat=r, donate=d, layers=layers, dim=dim, batch=batch, seconds=seconds)
             for name, l, r, d in VARIANTS}
  timed = common.time_interleaved({name: r["step"] for name, r in results.items()}, repeats=repeats, warmup=1)
  for name, (median, spread) in timed.items():
    results[name].update(median=median, spread=spread)
  mib = lambda b: "n/a" if b is None else f"{b / 2**20:.0f}"  # noqa: E731
  rows = [[name, f"{r['trainable']:,}", r["median"], r["spread"], batch / r["median"],
           results["full"]["median"] / r["median"], mib(r["xla_bytes"]), mib(r["device_peak"]),
           f"{r['opt_bytes'] / 2**20:.1f}"] for name, r in results.items()]
  header = ["variant", "trainable params", "step s (median)", "spread s", "clips/s", "speed-up vs full",
            "step memory MiB (XLA)", "device peak MiB", "optimiser state MiB"]
  return "\n".join([
      "## Fine-tuning step: full vs LoRA, remat, donation", "",
      common.machine_description(), "",
      f"BEATs layout, {layers} layers x {dim} dim, batch {batch} x {seconds:g} s clips (fbank in the step), "
      f"float32, one device; median of {repeats} steps after a warm-up step, the variants in turns.", "",
      common.markdown_table(header, rows)])


if __name__ == "__main__":
  print(run())
