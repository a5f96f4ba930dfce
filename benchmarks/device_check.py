r"""Accelerator check: full-size throughput, train-step memory and model FLOP utilisation on one GPU machine.

  benchmarks/device_check.sh                 # on the accelerator machine; writes BENCHMARKS.md's section
  python -m benchmarks.device_check --cpu_smoke --output=''   # tiny sizes on CPU: checks the logic (< 1 min)
  benchmarks/device_check.sh --only=pretrain   # one group (extraction, finetune, pretrain); the section
                                               # is rewritten with that group's rows only

Measures, in this order, each step only if the time budget allows (results are written after each one):
1. BEATs embedding extraction, wav -> fbank -> full-size BEATs (all layers pooled), bfloat16, fused
   attention: the batch size is autotuned (`asd_jax.runtime.autotune`), then the reference attention at
   the same batch for comparison.
2. EAT-large forward (the same extraction path), bfloat16, fused attention.
3. LBEATs and FEAT training steps (configs/lbeats.py, configs/feat.py with their default LoRA / full
   settings) at the configs' batch size (32) on 10 s clips, bfloat16 compute, donated state: the
   data-parallel step of `train_step.jit_train_step` compiled over all local devices, as `train.py` runs it;
   FEAT also with `model.remat` for its memory effect.
4. EAT-base and EAT-large pre-training steps (configs/pretrain_eat_base.py, pretrain_eat_large.py: 16
   masked views per clip, teacher EMA inside the step) on 10 s clips, bfloat16 compute, donated state, as
   `python -m asd_jax.pretrain` compiles them; clips/s counts clips, not views.
For each: clips/s, median step time, compile time, XLA's FLOP count of the compiled step (so MFU =
FLOP/s / the card's dense bf16 peak: H100 SXM and H200 989 TFLOP/s), XLA's memory estimate of the step and
the device's peak bytes in use so far. Goal noted in BENCHMARKS.md: BEATs extraction >= 3,000 clips/s on
one H100.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common

# Dense bfloat16 peak of one chip, FLOP/s, by a substring of `device_kind`.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12}
SECTION = "device_check"
GROUPS = ("extraction", "finetune", "pretrain")


def peak_flops(device_kind: str) -> float | None:
  for name, peak in PEAK_BF16.items():
    if name.lower() in device_kind.lower():
      return peak
  return None


def _time(compiled, args, repeats: int, *, donated_state: bool = False) -> tuple[float, float]:
  """Median and spread of `compiled(*args)` after one warm-up call, blocking on the outputs. With
  `donated_state` (a train step) each call's new state is the next call's first argument."""
  args = list(args)

  def call():
    out = compiled(*args)
    jax.block_until_ready(out)
    if donated_state:
      args[0] = out[0]

  return common.time_call(call, repeats=repeats, warmup=1)


class Check:
  """Collects rows, enforces the time budget, and writes results after every measurement."""

  def __init__(self, budget_s: float, output: str, json_path: str, smoke: bool):
    self.start, self.budget_s, self.output, self.json_path, self.smoke = time.perf_counter(), budget_s, output, \
        json_path, smoke
    self.rows: list[dict] = []
    self.skipped: list[str] = []
    self.notes: list[str] = []
    self.failures: list[str] = []
    self.repeats = 0
    self.device = jax.devices()[0]
    self.peak = peak_flops(self.device.device_kind)

  def guarded(self, what: str, fn, *args, **kwargs) -> None:
    """Runs one measurement; a failure (out of memory, a kernel the card refuses) is recorded, not fatal."""
    try:
      fn(self, *args, **kwargs)
    except Exception as error:  # noqa: BLE001  (one-shot script: keep measuring the rest)
      message = f"{what}: failed with {type(error).__name__}: {str(error).splitlines()[0][:300]}"
      print(message, flush=True)
      self.failures.append(message)
      self.write()

  def has_time(self, what: str) -> bool:
    if time.perf_counter() - self.start < self.budget_s:
      return True
    self.skipped.append(what)
    return False

  def add(self, what: str, *, batch: int, compiled, median: float, spread: float, compile_s: float,
          **extra) -> None:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    row = {"what": what, "batch": batch, "median_s": median, "spread_s": spread, "clips_per_s": batch / median,
           "compile_s": compile_s, "tflops": flops / median / 1e12 if flops else None,
           "mfu": flops / median / self.peak if flops and self.peak else None,
           "xla_gib": (common.xla_memory_bytes(compiled) or 0) / 2**30,
           "device_peak_gib": None if common.device_peak_bytes() is None else common.device_peak_bytes() / 2**30,
           **extra}
    self.rows.append(row)
    print(json.dumps(row), flush=True)
    self.write()

  def section(self) -> str:
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    table = common.markdown_table(
        ["measurement", "batch", "clips/s", "step ms (median)", "spread ms", "compile s", "TFLOP/s", "MFU",
         "step memory GiB (XLA)", "device peak GiB so far"],
        [[r["what"], r["batch"], f"{r['clips_per_s']:.1f}", f"{r['median_s'] * 1e3:.1f}",
          f"{r['spread_s'] * 1e3:.1f}", f"{r['compile_s']:.1f}", fmt(r["tflops"], ".1f"),
          fmt(r["mfu"], ".1%"), f"{r['xla_gib']:.2f}", fmt(r["device_peak_gib"], ".2f")] for r in self.rows])
    peak = "unknown peak (MFU not computed)" if self.peak is None else f"dense bf16 peak {self.peak / 1e12:.0f} TFLOP/s"
    lines = [f"## Accelerator check{' (CPU smoke run: tiny sizes, not a measurement)' if self.smoke else ''}", "",
             f"{common.machine_description()}; {jax.device_count()} device(s), {peak}", "",
             "Made by `benchmarks/device_check.sh`; bfloat16 compute, float32 parameters; "
             f"{'1 s' if self.smoke else '10 s'} clips; "
             f"median of {self.repeats} runs after a warm-up. FLOPs are XLA's count for the compiled step.", "",
             table]
    if self.notes:
      lines += [""] + [f"- {note}" for note in self.notes]
    if self.failures:
      lines += ["", "Failed:"] + [f"- {failure}" for failure in self.failures]
    if self.skipped:
      lines += ["", f"Skipped for lack of time: {', '.join(self.skipped)}."]
    return "\n".join(lines)

  def write(self) -> None:
    if self.json_path:
      pathlib.Path(self.json_path).write_text(json.dumps({"device": self.device.device_kind, "rows": self.rows,
                                                          "skipped": self.skipped, "failures": self.failures},
                                                         indent=1))
    if self.output:
      from benchmarks import run as runner

      path = pathlib.Path(self.output)
      document = path.read_text() if path.exists() else "# Benchmarks\n"
      path.write_text(runner.replace_section(document, SECTION, self.section()))


def _config(name: str, smoke: bool):
  import importlib

  config = importlib.import_module(f"configs.{name}").get_config()
  config.model.dtype = "bfloat16"
  config.model.attention = "fused"
  if smoke:
    config.model.preset = "tiny"
    config.data.clip_seconds = 1.0
    config.train.batch_size = 2
    config.lora.rank = 4
  return config


def check_extraction(check: Check, encoder: str, preset: str, *, smoke: bool, repeats: int,
                     candidates: list[int]) -> None:
  from asd_jax.embedding import extract
  from asd_jax.models import networks
  from asd_jax.runtime import autotune
  from asd_jax.runtime import sharding as shd

  mesh = shd.data_mesh()
  config = _config("fbeats", smoke)
  config.model.network, config.model.preset = encoder, "tiny" if smoke else preset
  samples = networks.clip_samples(config)
  arch = networks.encoder_architecture(encoder, config.model.preset)[0]
  depth, width = (arch.encoder_layers, arch.encoder_embed_dim) if encoder == "beats" else (arch.depth, arch.embed_dim)
  label = f"{encoder.upper() if encoder == 'eat' else 'BEATs'} {config.model.preset} ({depth} x {width})"
  best = None
  for attention in ("fused", "reference"):
    what = f"{label} extraction, wav -> pooled layers, bf16, {attention} attention"
    if not check.has_time(what):
      return
    config.model.attention = attention
    network = networks.build_network(config, num_classes=1)
    params = shd.replicate(jax.jit(lambda r, s=network: s.init(r)[0])(jax.random.key(0)), mesh)
    forward = extract.make_forward(network.outputs, mesh, all_layers=True)
    if best is None:
      best, tried = autotune.pick_batch_size(autotune.forward_throughput(forward, params, samples, mesh),
                                             [c * mesh.devices.size for c in candidates])
      print(f"autotune {label}: {tried} -> {best}", flush=True)
      check.notes.append(f"{label}: autotuned batch {best} from clips/s by batch "
                         f"{', '.join(f'{b}: ' + ('OOM' if r is None else f'{r:.0f}') for b, r in tried)} "
                         "(so its fused-attention row's executable came from the compilation cache)")
    wav = shd.put_batch({"wav": np.zeros((best, samples), np.float32)}, mesh)["wav"]
    start = time.perf_counter()
    compiled = forward.lower(params, wav).compile()
    compile_s = time.perf_counter() - start
    median, spread = _time(compiled, (params, wav), repeats)
    check.add(what, batch=best, compiled=compiled, median=median, spread=spread, compile_s=compile_s)


def check_train_step(check: Check, name: str, *, smoke: bool, repeats: int, remat: bool = False) -> None:
  from asd_jax.finetuning import fine_tune
  from asd_jax.models import networks
  from asd_jax.runtime import sharding as shd
  from asd_jax.training import train_step as ts

  config = _config(name, smoke)
  config.model.remat = remat
  what = f"{name.upper()} train step ({'LoRA' if config.lora.enabled else 'full'}), bf16, donated" + \
      (", remat" if remat else "")
  if not check.has_time(what):
    return
  mesh = shd.data_mesh()
  batch = config.train.batch_size
  network = networks.build_network(config, num_classes=16)
  run = fine_tune.setup(config, network, jax.random.key(0), total_steps=1000)
  step = ts.jit_train_step(run.train_step(), mesh, donate=True)
  wav = np.random.default_rng(0).normal(scale=0.1, size=(batch, networks.clip_samples(config))).astype(np.float32)
  data = shd.put_batch({"wav": wav, "label": np.arange(batch, dtype=np.int32) % 16}, mesh)
  state = shd.replicate(run.state, mesh)
  rng = shd.replicate(jax.random.key(1), mesh)
  start = time.perf_counter()
  compiled = step.lower(state, data, rng).compile()
  compile_s = time.perf_counter() - start
  median, spread = _time(compiled, (state, data, rng), repeats, donated_state=True)
  check.add(what, batch=batch, compiled=compiled, median=median, spread=spread, compile_s=compile_s,
            devices=mesh.devices.size)


def check_pretrain_step(check: Check, size: str, *, smoke: bool, repeats: int, batch: int) -> None:
  import importlib

  from asd_jax.pretraining import pretrain
  from asd_jax.runtime import sharding as shd
  from asd_jax.training import train_step as ts

  config = importlib.import_module(f"configs.pretrain_eat_{size}").get_config()
  config.model.dtype = "bfloat16"
  config.model.attention = "fused"
  config.train.batch_size = batch
  config.pretrain.replica_batch = 0
  if smoke:
    config.model.preset, config.model.target_length = "tiny", 0
    config.data.clip_seconds = 1.0
    config.decoder.decoder_dim = 64
    config.targets.average_top_k_layers = 2
  what = f"EAT-{size} pre-training step ({config.pretrain.clone_batch} views per clip), bf16, donated"
  if not check.has_time(what):
    return
  mesh = shd.data_mesh()
  settings, setup, _ = pretrain.build(config, jax.random.key(0))
  state, step = setup.state, setup.train_step()
  samples = int(round(config.data.clip_seconds * config.data.sample_rate))
  wav = np.random.default_rng(0).normal(scale=0.1, size=(batch, samples)).astype(np.float32)
  data = shd.put_batch({"wav": wav, "valid_samples": np.full(batch, samples, np.int32)}, mesh)
  state = shd.replicate(state, mesh)
  rng = shd.replicate(jax.random.key(1), mesh)
  jitted = ts.jit_train_step(step, mesh, donate=True)
  start = time.perf_counter()
  compiled = jitted.lower(state, data, rng).compile()
  compile_s = time.perf_counter() - start
  median, spread = _time(compiled, (state, data, rng), repeats, donated_state=True)
  enc = settings.encoder
  check.add(f"{what} ({enc.depth} x {enc.embed_dim})", batch=batch, compiled=compiled, median=median, spread=spread,
            compile_s=compile_s, devices=mesh.devices.size)


def define_flags() -> None:
  """Defines this CLI's flags; only when run as a program, so importing this module defines none."""
  flags.DEFINE_bool("cpu_smoke", False, "Tiny models and batches: checks the script's logic on CPU.")
  flags.DEFINE_string("output", "BENCHMARKS.md", "Markdown file whose device_check section is rewritten "
                      "('' = print only). Ignored with --cpu_smoke unless set explicitly.")
  flags.DEFINE_string("json", "", "Also write the raw measurements here (JSON).")
  flags.DEFINE_float("budget_s", 420.0, "Start no new measurement after this many seconds.")
  flags.DEFINE_integer("repeats", 5, "Timed runs per measurement (after one warm-up).")
  flags.DEFINE_list("only", [], f"Run only these groups of measurements (of {', '.join(GROUPS)}); default all.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  smoke = f.cpu_smoke
  if not smoke and jax.default_backend() == "cpu":
    raise SystemExit("no accelerator found (jax.default_backend() is 'cpu'); use --cpu_smoke to test the logic")
  output = f.output if (not smoke or f['output'].present) else ""
  check = Check(f.budget_s, output, f.json, smoke)
  repeats = 1 if smoke else f.repeats
  candidates = [1, 2] if smoke else [128, 256, 512]
  check.repeats = repeats
  groups = set(f.only or GROUPS)
  if groups - set(GROUPS):
    raise SystemExit(f"--only={','.join(f.only)}: expected some of {', '.join(GROUPS)}")
  if "extraction" in groups:
    check.guarded("BEATs extraction", check_extraction, "beats", "base", smoke=smoke, repeats=repeats,
                  candidates=candidates)
    check.guarded("EAT-large extraction", check_extraction, "eat", "large", smoke=smoke, repeats=repeats,
                  candidates=candidates if smoke else [64, 128, 256])
  if "finetune" in groups:
    check.guarded("LBEATs train step", check_train_step, "lbeats", smoke=smoke, repeats=repeats)
    check.guarded("FEAT train step", check_train_step, "feat", smoke=smoke, repeats=repeats)
    if not smoke:  # same code path as the row above, with one flag: the smoke run leaves it out for time
      check.guarded("FEAT train step, remat", check_train_step, "feat", smoke=smoke, repeats=repeats, remat=True)
  if "pretrain" in groups:
    # Upstream's global batch is 48 clips (12 per GPU on 4 GPUs); EAT-large at half of it to fit one card.
    check.guarded("EAT-base pre-training step", check_pretrain_step, "base", smoke=smoke, repeats=repeats,
                  batch=2 if smoke else 48)
    check.guarded("EAT-large pre-training step", check_pretrain_step, "large", smoke=smoke, repeats=repeats,
                  batch=2 if smoke else 24)
  check.write()
  print(check.section())
  print(f"[device_check] {time.perf_counter() - check.start:.0f} s")


if __name__ == "__main__":
  define_flags()
  app.run(main)
