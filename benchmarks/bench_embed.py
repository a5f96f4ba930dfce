"""Benchmark: embedding extraction end to end from wav files (decoding included), full-size BEATs.

Synthetic DCASE-layout wav files (`asd_jax.data.synth.generate`, 10 s, 16 kHz) are read by the ordered
Grain inference pipeline, decoded, cropped, batched, padded, put on the device, turned into fbanks and
encoded, as `python -m asd_jax.embed` does (`embedding.extract.embed_batches`, forward compiled ahead and reused).
Rows: decoding alone, the compiled forward alone on in-memory batches (with the default
`config.embed.microbatch`, one clip at a time on CPU, and with the whole batch at once), and end to end with
and without the background prefetch (`config.data.prefetch`). Float32, random weights. `quick=True` uses the tiny model.
"""

from __future__ import annotations

import pathlib
import tempfile
import time

import jax
import numpy as np

from benchmarks import common

MACHINE = "fan"


def run(quick: bool = False) -> str:
  from asd_jax.data import datasets
  from asd_jax.data import layout
  from asd_jax.data import synth
  from asd_jax.embedding import extract
  from asd_jax.finetuning import fine_tune
  from asd_jax.models import networks
  from asd_jax.runtime import microbatch
  from asd_jax.runtime import sharding as shd
  from configs import common as base

  num_clips, batch_size, repeats = (6, 2, 2) if quick else (8, 4, 3)
  seconds = 2.0 if quick else 10.0
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp) / "data"
    synth.generate(root, scale=0.001, machines=(MACHINE,), duration=seconds)
    clips = layout.scan_dataset(str(root))[:num_clips]
    config = base.get_config()
    config.model.network, config.model.preset = "beats", "tiny" if quick else "base"
    config.model.dtype = "float32"
    config.data.clip_seconds = seconds
    wav_config = datasets.WavConfig(sample_rate=config.data.sample_rate, duration_s=seconds)
    batches = lambda: iter(datasets.inference_dataset(clips, None, batch_size=batch_size,  # noqa: E731
                                                      config=wav_config))

    network = networks.build_network(config, num_classes=1)
    mesh = shd.data_mesh(jax.devices()[:1])
    params = shd.replicate(fine_tune.init_trainable(config, network, jax.random.key(0))[0]["model"], mesh)
    slices = microbatch.resolve(config.embed.microbatch)
    wav = shd.put_batch({"wav": np.zeros((batch_size, networks.clip_samples(config)), np.float32)}, mesh)["wav"]
    start = time.perf_counter()
    compiled = extract.make_forward(network.outputs, mesh, True, slices).lower(params, wav).compile()
    compile_s = time.perf_counter() - start
    whole_batch = extract.make_forward(network.outputs, mesh, True, 0).lower(params, wav).compile()

    def decode_only():
      for _ in batches():
        pass

    def forward_only(executable):
      def run_batches():
        for _ in range(-(-num_clips // batch_size)):
          jax.device_get(executable(params, wav))
      return run_batches

    def end_to_end(prefetch):
      return lambda: extract.embed_batches(compiled, params, batches(), batch_size=batch_size, mesh=mesh,
                                         num_clips=num_clips, progress=False, prefetch=prefetch)

    timed = common.time_interleaved({  # in turns, so that load changes hit every stage alike
        "decode + crop + batch only (Grain, 0 workers)": decode_only,
        f"fbank + encoder only (in-memory batches; microbatch {slices}, the default here)": forward_only(compiled),
        "fbank + encoder only (in-memory batches; whole batch at once, microbatch 0)": forward_only(whole_batch),
        "end to end, prefetch 2 (default)": end_to_end(2),
        "end to end, prefetch 0": end_to_end(0)}, repeats=repeats, warmup=0)
  reference = timed["end to end, prefetch 0"][0]
  rows = [[name, median, spread, num_clips / median, reference / median if name.startswith("end") else "-"]
          for name, (median, spread) in timed.items()]
  header = ["stage", "median s", "spread s", "clips/s", "end to end: speed-up vs no prefetch"]
  arch = network.architecture
  return "\n".join([
      "## Embedding extraction from wav files (end to end)", "",
      common.machine_description(), "",
      f"{num_clips} synthetic {seconds:g} s clips, batch {batch_size}, BEATs {arch['encoder_layers']} x "
      f"{arch['encoder_embed_dim']}, float32, all layers pooled; forward compiled once ahead ({compile_s:.1f} s, "
      f"not in the times); median of {repeats} passes, the stages in turns.", "",
      common.markdown_table(header, rows)])


if __name__ == "__main__":
  print(run())
