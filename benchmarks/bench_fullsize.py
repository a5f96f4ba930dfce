"""Benchmark: the report's models at full size on this machine: one training step per model, the detector's size
on disk, and what `detect` needs to score one recording.

Random weights of the released shapes (the BEATs iter3+ and EAT-large presets, whose layouts
tests/models/test_beats.py and test_eat.py check against tests/fixtures/*_keys.json), 10 s clips, float32, batch 2,
one device, the trainer's own compiled step (`finetuning.fine_tune.setup`, `training.train_step.jit_train_step`) on
a fixed batch. Each model runs in a process of its own, so its peak resident memory (`ru_maxrss`) is its own: the
JAX runtime, parameters, optimiser state, activations and compilation. Per model: compile seconds, the median step
of `STEPS` after one warm-up step, clips/s, peak memory, parameter counts.

Detector sizes: systems 1 and 2 exported as the pipeline exports them (`detector.export`) from random full-size
parameters and scorers of the right dimensions (Dual-Branch's branches starting from LBEATs' and LEAT's base, as
the pipeline's models all start from `init.beats` and `init.eat`), twice: as the old format stored them (every model's encoders
merged and written in full; measured by exporting merged parameters, which share no content) and as it now does
(a LoRA model as its base encoder plus its factors, each distinct encoder written once). Then `detect` on one 10 s
recording with the System 1 detector, in a process of its own: wall time and peak memory.

`--quick` runs the same code on the tiny presets and 1 s clips (a smoke test, not a measurement).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import common

MODELS = ("fbeats", "lbeats", "feat", "leat", "dual_branch")
NAMES = {"fbeats": "FBEATs", "lbeats": "LBEATs", "feat": "FEAT", "leat": "LEAT (EAT-large)",
         "dual_branch": "Dual-Branch"}
SYSTEMS = ("system1", "system2")
NUM_CLASSES = 64  # a label space of the order of a DCASE dev set's attribute classes; the head is a small part
BATCH = 2
STEPS = 3
LAYERS = {"fbeats": "all", "lbeats": "all", "feat": "all", "leat": "all", "dual_branch": "last"}


def _config(key: str, quick: bool):
  """The model's fine-tuning config at full size (quick: tiny presets, 1 s clips), batch 2, float32."""
  from configs import pipeline_base
  c = pipeline_base.TRAIN_CONFIGS[key].get_config()
  c.train.batch_size = BATCH
  c.model.dtype = "float32"
  c.data.clip_seconds = 1.0 if quick else 10.0
  if quick:
    c.lora.rank, c.lora.alpha = 4, 4.0
    c.model.eat_target_length = 0
    if key == "dual_branch":
      c.model.beats_preset = c.model.eat_preset = "tiny"
    else:
      c.model.preset = "tiny"
  return c


def _rss_mib() -> float:
  return common.peak_rss_mib()


def step_child(key: str, quick: bool) -> dict:
  """One model's compiled training step: compile time, step times, peak memory, parameter counts."""
  import jax
  import numpy as np

  from asd_jax.checkpoints import converted
  from asd_jax.finetuning import fine_tune
  from asd_jax.models import networks
  from asd_jax.runtime import sharding as shd
  from asd_jax.training import train_step as ts

  config = _config(key, quick)
  network = networks.build_network(config, NUM_CLASSES)
  run = fine_tune.setup(config, network, jax.random.key(0), total_steps=100)
  mesh = shd.data_mesh(jax.devices()[:1])
  step = ts.jit_train_step(run.train_step(), mesh, donate=config.train.donate)
  wav = np.random.default_rng(0).normal(scale=0.1, size=(BATCH, networks.clip_samples(config))).astype(np.float32)
  data = shd.put_batch({"wav": wav, "label": np.arange(BATCH, dtype=np.int32) % NUM_CLASSES}, mesh)
  labels = jax.tree.leaves(run.labels)
  leaves = jax.tree.leaves(run.state.params)
  counts = {"params": converted.count_params(run.state.params["model"]),
            "trainable": int(sum(x.size for x, label in zip(leaves, labels) if label == "trainable"))}
  state = shd.replicate(run.state, mesh)
  rng = jax.random.key(1)
  start = time.perf_counter()
  compiled = step.lower(state, data, rng).compile()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(1 + (1 if quick else STEPS)):
    start = time.perf_counter()
    state, metrics = compiled(state, data, rng)
    jax.block_until_ready(metrics)
    if i:  # the first step is the warm-up
      times.append(time.perf_counter() - start)
  return {"compile_s": compile_s, "step_s": times, "peak_rss_mib": _rss_mib(), **counts}


def _zero_outputs(key: str, config, network) -> dict:
  """Zero arrays of the shapes of the network's embedding outputs for one clip (`jax.eval_shape`: no compute)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from asd_jax.models import networks

  params = jax.eval_shape(network.init, jax.random.key(0))[0]
  shapes = jax.eval_shape(lambda p, w: network.outputs(p, w, LAYERS[key] == "all"), params,
                          jax.ShapeDtypeStruct((1, networks.clip_samples(config)), jnp.float32))
  return {name: np.zeros(s.shape, np.float32) for name, s in shapes.items()}


def _scorer(key: str, outputs: dict, root: str, layers: str = "last", sources: tuple[str, ...] = ()):
  """A scorer fitted on random vectors of the shape model `key`'s scorer sees (from `outputs`, {model key: zero
  outputs}), 20 source training clips of one section (fan 00)."""
  import numpy as np

  from asd_jax.data import records
  from asd_jax.scoring import features
  from asd_jax.scoring import scorer as scorer_lib

  shape = features.model_vectors(key, outputs, layers=layers, sources=sources).shape[1:]
  train = [records.ClipRecord(path=path, machine="fan", section="00", split="train", domain="source", label="normal")
           for path in _training_paths(root)]
  x = np.random.default_rng(0).normal(size=(len(train), *shape)).astype(np.float32)
  return scorer_lib.fit(x, train)


def _training_paths(root: str) -> list[str]:
  """The 20 normal training clips (fan 00) the scorers are fitted on; the export reads their headers."""
  return [os.path.join(root, "fan", "train", f"section_00_source_train_normal_{i:04d}.wav") for i in range(20)]


def _write_training_clips(root: str, quick: bool) -> None:
  """`_training_paths` as 16 kHz PCM_16 wav files of the models' clip length (random noise)."""
  import numpy as np
  import soundfile

  rng = np.random.default_rng(0)
  for path in _training_paths(root):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, rng.normal(scale=0.1, size=int((1.0 if quick else 10.0) * 16000)).astype(np.float32),
                    16000, subtype="PCM_16")


def _folder_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def detector_child(out: str, quick: bool) -> dict:
  """Exports systems 1 and 2 in both forms (see the module docstring); keeps System 1's new-form detector in
  `out/system1`. Returns {system: {"before": bytes, "after": bytes, "params": {model: count}}}."""
  import jax
  import numpy as np

  from asd_jax.checkpoints import converted
  from asd_jax.detector import export as export_lib
  from asd_jax.finetuning import lora
  from asd_jax.models import lora_factors
  from asd_jax.models import networks
  from asd_jax.scoring import fusion
  from configs import pipeline_base, systems

  data_root = os.path.join(out, "data")
  _write_training_clips(data_root, quick)
  result = {}
  for system in SYSTEMS:
    weights = dict(zip(pipeline_base.MODEL_KEYS, systems.WEIGHTS[system]))
    sources = {"fusion": ("lbeats", "leat")}
    needed = export_lib.needed_models(weights, sources)
    parts, counts, outputs = {}, {}, {}
    for key in [k for k in MODELS if k in needed]:
      config = _config(key, quick)
      network = networks.build_network(config, NUM_CLASSES)
      params = networks.initial_params(network, jax.random.key(len(parts)))
      if key == "dual_branch":  # its branches start from the BEATs and EAT that LBEATs and LEAT start from
        base = {"beats": parts.get("lbeats"), "eat": parts.get("leat")}
        params = {**params, "encoder": {name: base[name][2]["encoder"] if base[name] else sub
                                        for name, sub in params["encoder"].items()}}
      factors = None
      if config.lora.enabled:  # trained-looking factors: A random (as initialised), B random too (trained)
        factors = lora.init_lora(params, jax.random.key(7), rank=config.lora.rank, targets=config.lora.targets)
        factors = jax.tree.map(lambda a: a + 0.01 * jax.random.normal(jax.random.key(8), a.shape), factors)
      counts[key] = converted.count_params(params) + (converted.count_params(factors) if factors else 0)
      outputs[key] = _zero_outputs(key, config, network)
      parts[key] = (config, network, params, factors, _scorer(key, outputs, data_root, LAYERS[key]))
    fusion_scorer = (_scorer("fusion", outputs, data_root, sources=sources["fusion"]) if "fusion" in needed
                     else None)
    sizes = {}
    for form in ("before", "after"):
      models = []
      for key, (config, network, params, factors, scorer) in parts.items():
        merged = form == "before" and factors is not None
        models.append(export_lib.ExportedModel(
            key=key, name=key, layers=LAYERS[key], sources=(), all_layers=LAYERS[key] == "all", config=config,
            network=network, params=lora_factors.merge_lora({"model": params, "lora": factors},
                                                            alpha=config.lora.alpha) if merged else params,
            num_classes=NUM_CLASSES, scorer=scorer, lora=None if merged else factors,
            lora_alpha=None if merged else config.lora.alpha))
      if fusion_scorer is not None:
        models.append(export_lib.ExportedModel(key="fusion", name="fusion", layers="last", sources=sources["fusion"],
                                               all_layers=False, config=None, network=None, params=None,
                                               num_classes=1, scorer=fusion_scorer))
      folder = os.path.join(out, f"{system}_{form}")
      export_lib.export(folder, system=system, weights={k: w for k, w in weights.items() if k in needed},
                        models=models, thresholds={("fan", "00"): 0.0}, root=data_root, threshold_method="gamma",
                        threshold_quantile=0.9)
      sizes[form] = _folder_bytes(folder)
      if not (system == "system1" and form == "after"):
        shutil.rmtree(folder)
    result[system] = {**sizes, "params": counts}
    del parts
  os.rename(os.path.join(out, "system1_after"), os.path.join(out, "system1"))
  wav = np.random.default_rng(0).normal(scale=0.1, size=int((1.0 if quick else 10.0) * 16000)).astype(np.float32)
  clip = os.path.join(out, "new", "fan", "test", "section_00_0000.wav")
  os.makedirs(os.path.dirname(clip))
  import soundfile
  soundfile.write(clip, wav, 16000, subtype="PCM_16")
  return {"systems": result, "peak_rss_mib": _rss_mib()}


def detect_child(out: str) -> dict:
  """`detect` of one recording with the System 1 detector in `out`: wall time (load, compile, score) and memory."""
  import contextlib
  import io

  from asd_jax.detector import detect

  start = time.perf_counter()
  with contextlib.redirect_stdout(io.StringIO()):
    _, detections = detect.run(os.path.join(out, "system1"), [os.path.join(out, "new")])
  return {"wall_s": time.perf_counter() - start, "peak_rss_mib": _rss_mib(), "score": detections[0].score}


def _child(*args: str) -> dict:
  """Runs this module as a program with `args`; returns the JSON of its last output line."""
  proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_fullsize", *args], capture_output=True, text=True,
                        check=False)
  if proc.returncode:
    raise RuntimeError(f"benchmarks.bench_fullsize {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _gib(mib: float) -> str:
  return f"{mib / 1024:.1f}"


def run(quick: bool = False) -> str:
  load = os.getloadavg()
  started = time.perf_counter()
  steps = {}
  for key in MODELS:
    print(f"[bench fullsize] {NAMES[key]} training step ...", flush=True)
    steps[key] = _child("step", key, str(int(quick)))
  with tempfile.TemporaryDirectory() as out:
    print("[bench fullsize] detectors ...", flush=True)
    detectors = _child("detector", out, str(int(quick)))
    print("[bench fullsize] detect ...", flush=True)
    detected = _child("detect", out)
  load_after = os.getloadavg()
  step_rows = []
  for key, r in steps.items():
    median = sorted(r["step_s"])[len(r["step_s"]) // 2]
    step_rows.append([NAMES[key], f"{r['params'] / 1e6:.1f}", f"{r['trainable'] / 1e6:.2f}", f"{r['compile_s']:.0f}",
                      f"{median:.1f}", f"{min(r['step_s']):.1f}-{max(r['step_s']):.1f}", BATCH / median,
                      _gib(r["peak_rss_mib"])])
  size_rows = []
  for system, r in detectors["systems"].items():
    size_rows.append([system, ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in r["params"].items()),
                      f"{r['before'] / 1e9:.2f}", f"{r['after'] / 1e9:.2f}", f"{(r['after'] / r['before'] - 1):+.1%}"])
  what = "tiny presets, 1 s clips (--quick: a smoke test)" if quick else "full size, 10 s clips"
  return "\n".join([
      "## Full-size models on CPU: training step, detector size, detect", "",
      common.machine_description(), "",
      f"Load average (1, 5, 15 min) {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} at the start and {load_after[0]:.1f}, "
      f"{load_after[1]:.1f}, {load_after[2]:.1f} at the end ({(time.perf_counter() - started) / 60:.0f} min): the "
      "machine is shared, so the times are what a user of a busy 2-core machine sees, not the code's best.", "",
      f"Training step, {what}, random weights of the released shapes, batch {BATCH}, float32, one device, "
      f"{NUM_CLASSES} classes; median of {1 if quick else STEPS} steps after a warm-up step; peak memory: the "
      "process's maximum resident set (runtime, parameters, optimiser state, activations, compilation).", "",
      common.markdown_table(["model", "params (M)", "trained (M)", "compile s", "step s (median)", "range s",
                             "clips/s", "peak memory GiB"], step_rows), "",
      "Detector folder (`detector.export`), before: every model's encoders merged and written in full (the old "
      "format); after: a LoRA model as its base encoder plus its factors, each distinct encoder written once. "
      "System 1 fuses FBEATs, FEAT and Fusion (LBEATs + LEAT), whose LoRA bases no other model of it shares, so it "
      "gains nothing and stores its factors besides; System 2 (3 and 4 alike, plus FBEATs) fuses LBEATs, LEAT and "
      "Dual-Branch, whose branches start from the same BEATs and EAT as LBEATs and LEAT.", "",
      common.markdown_table(["system", "models (parameters incl. LoRA factors)", "before GB", "after GB", "change"],
                            size_rows), "",
      f"`detect` of one {1 if quick else 10} s recording with the System 1 detector (after), in a process of its "
      f"own: {detected['wall_s']:.0f} s wall (loading the four networks, compiling their forward passes, one batch "
      f"of {16} clips each: the batch the pipeline embedded with, padded), peak memory "
      f"{_gib(detected['peak_rss_mib'])} GiB; the exporting process peaked at "
      f"{_gib(detectors['peak_rss_mib'])} GiB."])


def main(argv: list[str]) -> None:
  what = argv[1]
  if what == "step":
    out = step_child(argv[2], bool(int(argv[3])))
  elif what == "detector":
    out = detector_child(argv[2], bool(int(argv[3])))
  elif what == "detect":
    out = detect_child(argv[2])
  else:
    raise SystemExit(f"unknown child {what!r}")
  print(json.dumps(out))


if __name__ == "__main__":
  main(sys.argv)
