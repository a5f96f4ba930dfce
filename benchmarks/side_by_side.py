r"""Side by side in one process: upstream PyTorch BEATs or EAT vs this Flax model, same weights and inputs.

  python -m benchmarks.side_by_side --upstream_beats=/path/to/your/clone/of/unilm/beats
  python -m benchmarks.side_by_side --upstream_eat=/path/to/your/clone/of/EAT [--eat_size=large]

The upstream code is never part of this project: it is imported at run time from the folder you give
(your own clone of microsoft/unilm, its `beats/` folder holding `BEATs.py` and `backbone.py`; or your clone
of cwx-worst-one/EAT, holding `models/EAT_pretraining.py` and the files it imports). A full-size upstream
model is built in PyTorch with random weights, its `state_dict()` goes through our strict converter
(`beats.convert_state_dict`, `eat.convert_fairseq_state_dict`), and both models encode the same
normalised fbank (made by our Kaldi front end from synthetic audio; the front end has its own fixture
parity test). Timing alternates between the models, so load on the machine hits them alike. Reports
clips/s of each, the speed ratio (Flax / PyTorch), and the max abs difference of the final-layer features
(for EAT also of the CLS embedding). Results go into the `side_by_side` (BEATs) and `eat_side_by_side`
sections of BENCHMARKS.md (`--output=''` to only print them). `--layers` shortens both models for a quick
check.

torchaudio is only needed by upstream's own fbank (`preprocess`, `feature_extract.py`), which this
comparison bypasses: if it is not installed, an empty stand-in module is registered so `BEATs.py` imports.

EAT's model files import fairseq (which does not install on Python 3.11 with NumPy 2), timm and omegaconf;
`benchmarks/upstream_eat.py` registers stand-ins for those that are missing. Of them only timm's `Mlp`
(fc1 -> GELU -> fc2) runs in `extract_features`; the rest are used while building the model or refuse to run
(pretraining only). Upstream built with the stand-ins reproduces the EAT fixtures (tests/test_benchmarks.py).
"""

from __future__ import annotations

import math
import pathlib
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import flags

from benchmarks import upstream_eat
from benchmarks.upstream_beats import import_upstream_beats

SAMPLE_RATE = 16000
TORCH = "PyTorch upstream (eager)"


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _time_against_torch(run_torch: Callable[[], Any], differences: Callable[[np.ndarray], list[float]],
                        forwards: dict[str, Callable], params: Any, x: Any, *,
                        repeats: int) -> tuple[list[list], dict[str, list[float]]]:
  """Times `run_torch` and each jitted `forwards[name](params, x)` in turns.

  Returns rows `[model, batch, median s, spread s, clips/s, speed-up vs PyTorch]` (PyTorch first) and, per
  Flax model, `differences(its output)` (max abs differences from upstream's output).
  """
  import jax

  from benchmarks import common

  diffs = {name: differences(np.asarray(forward(params, x))) for name, forward in forwards.items()}
  fns = {TORCH: run_torch}
  fns.update({name: (lambda f=f: jax.block_until_ready(f(params, x))) for name, f in forwards.items()})
  timed = common.time_interleaved(fns, repeats=repeats, warmup=1)
  batch, torch_time = x.shape[0], timed[TORCH][0]
  rows = [[name, batch, median, spread, batch / median, torch_time / median]
          for name, (median, spread) in timed.items()]
  return rows, diffs


def compare_beats(upstream_dir: str, *, batches: list[int], repeats: int, seconds: float,
                  layers: int = 12) -> tuple[list[list], float]:
  """Rows `[model, batch, median s, spread s, clips/s, Flax speed-up, max |diff|]` and the largest diff."""
  import dataclasses

  import jax
  import jax.numpy as jnp
  import torch

  from asd_jax.audio import fbank as fb
  from asd_jax.models import beats
  from asd_jax.runtime import microbatch

  upstream = import_upstream_beats(upstream_dir)
  config = dataclasses.replace(beats.BEATS_ITER3_PLUS, encoder_layers=layers)
  torch.manual_seed(0)
  torch_model = upstream.BEATs(upstream.BEATsConfig(config.to_dict())).eval()
  # The comparison starts from the normalised fbank: upstream's own front end needs torchaudio.
  torch_model.preprocess = lambda source, **_: source
  params = jax.device_put(beats.convert_state_dict(torch_model.state_dict(), config, source="upstream BEATs"))

  rows, worst = [], 0.0
  rng = np.random.default_rng(0)
  for batch in batches:
    wav = (0.1 * rng.standard_normal((batch, int(seconds * SAMPLE_RATE)))).astype(np.float32)
    features = np.array(jax.jit(lambda w: fb.fbank(w, fb.BEATS_FBANK))(wav))
    torch_input = torch.from_numpy(features)
    models = {"Flax (reference attention)": beats.BEATs(config),
              "Flax (dot_product_attention)": beats.BEATs(config, fused_attention=True)}
    forwards = {name: jax.jit(lambda p, x, m=m: m.apply({"params": p}, x).features) for name, m in models.items()}
    if batch > 1:  # what `python -m asd_jax.embed` runs on CPU (config.embed.microbatch auto = 1)
      reference = models["Flax (reference attention)"]
      forwards["Flax (reference, clip by clip: embed.microbatch=1)"] = jax.jit(
          lambda p, x: microbatch.in_slices(lambda rows: reference.apply({"params": p}, rows).features, 1)(x))
    x = jnp.asarray(features)

    with torch.inference_mode():
      expected = torch_model.extract_features(torch_input)[0].numpy()

    def run_torch():
      with torch.inference_mode():
        torch_model.extract_features(torch_input)

    batch_rows, diffs = _time_against_torch(run_torch, lambda out: [max_abs_diff(out, expected)], forwards,
                                            params, x, repeats=repeats)
    rows += [row + (["-"] if row[0] == TORCH else [f"{d:.2e}" for d in diffs[row[0]]]) for row in batch_rows]
    worst = max(worst, *(d[0] for d in diffs.values()))
  return rows, worst


def beats_section(upstream_dir: str, *, batches: list[int], repeats: int, seconds: float, layers: int) -> str:
  import torch

  from benchmarks import common

  rows, worst = compare_beats(upstream_dir, batches=batches, repeats=repeats, seconds=seconds, layers=layers)
  header = ["model", "batch", "median s", "spread s", "clips/s", "speed-up vs PyTorch", "max abs diff"]
  return "\n".join([
      "## Side by side: upstream PyTorch BEATs vs Flax BEATs (float32, same weights and inputs)", "",
      f"{common.machine_description()}; torch {torch.__version__} ({torch.get_num_threads()} threads)", "",
      f"{layers} x 768 BEATs_iter3+ layout, random weights made in PyTorch and converted by "
      f"`beats.convert_state_dict`; {seconds:g} s clips from the normalised fbank; {repeats} timed runs each, "
      f"alternating. Largest abs difference of the final features: {worst:.2e} (values are O(1)). "
      "Command: `python -m benchmarks.side_by_side --upstream_beats=PATH`.", "",
      common.markdown_table(header, rows)])


EAT_SIZES = {"base": "EAT_BASE", "large": "EAT_LARGE"}


def eat_fbank_frames(seconds: float) -> int:
  """fbank frames the EAT input is padded to: upstream's 1024 per 10 s, rounded up to a multiple of 16."""
  return 16 * math.ceil(102.4 * seconds / 16)


def compare_eat(upstream_dir: str, *, size: str, batches: list[int], repeats: int, seconds: float,
                layers: int | None = None) -> tuple[list[list], float, float]:
  """Rows `[model, batch, median s, spread s, clips/s, speed-up, max |diff| features, CLS]`, largest diffs."""
  import dataclasses

  import jax
  import jax.numpy as jnp
  import torch

  from asd_jax.audio import fbank as fb
  from asd_jax.models import eat
  from asd_jax.runtime import microbatch

  upstream = upstream_eat.import_upstream_eat(upstream_dir)
  config = getattr(eat, EAT_SIZES[size])
  config = dataclasses.replace(config, depth=layers or config.depth)
  model_cfg = upstream_eat.pretraining_model_cfg(config)
  if eat.EATConfig.from_fairseq_cfg(model_cfg) != config:  # the mapping our fairseq loader applies
    raise AssertionError(f"upstream cfg {model_cfg} reads back as {eat.EATConfig.from_fairseq_cfg(model_cfg)}, "
                         f"not {config}")
  torch.manual_seed(0)
  torch_model = upstream_eat.build_model(upstream, model_cfg)
  with warnings.catch_warnings():  # upstream's state_dict override passes positional args (a torch FutureWarning)
    warnings.filterwarnings("ignore", "Positional args are being deprecated", FutureWarning)
    state_dict = torch_model.state_dict()
  params = jax.device_put(eat.convert_fairseq_state_dict(state_dict, config, source="upstream EAT"))

  rows, worst, worst_cls = [], 0.0, 0.0
  rng = np.random.default_rng(0)
  front_end = dataclasses.replace(fb.EAT_FBANK, target_length=eat_fbank_frames(seconds))
  for batch in batches:
    wav = (0.1 * rng.standard_normal((batch, int(seconds * SAMPLE_RATE)))).astype(np.float32)
    features = np.array(jax.jit(lambda w: fb.fbank(w, front_end))(wav))  # [batch, frames, 128], normalised
    # Upstream's own front end (feature_extract.py) needs torchaudio; both models start from this fbank.
    torch_input = torch.from_numpy(features)[:, None]  # [batch, 1, frames, 128]
    models = {"Flax (reference attention)": eat.EAT(config),
              "Flax (dot_product_attention)": eat.EAT(config, fused_attention=True)}
    forwards = {name: jax.jit(lambda p, x, m=m: m.apply({"params": p}, x).layer_outputs[-1])
                for name, m in models.items()}
    if batch > 1:  # what `python -m asd_jax.embed` runs on CPU (config.embed.microbatch auto = 1)
      reference = models["Flax (reference attention)"]
      forwards["Flax (reference, clip by clip: embed.microbatch=1)"] = jax.jit(
          lambda p, x: microbatch.in_slices(lambda rows: reference.apply({"params": p}, rows).layer_outputs[-1], 1)(x))
    x = jnp.asarray(features)

    def run_torch():
      with torch.inference_mode():
        return torch_model.extract_features(torch_input, padding_mask=None, mask=False,
                                            remove_extra_tokens=False)["x"]

    expected = run_torch().numpy()  # [batch, 1 + patches, dim]; token 0 is CLS

    def differences(out):
      return [max_abs_diff(out, expected), max_abs_diff(out[:, 0], expected[:, 0])]

    batch_rows, diffs = _time_against_torch(run_torch, differences, forwards, params, x, repeats=repeats)
    rows += [row + (["-", "-"] if row[0] == TORCH else [f"{d:.2e}" for d in diffs[row[0]]]) for row in batch_rows]
    worst = max(worst, *(d[0] for d in diffs.values()))
    worst_cls = max(worst_cls, *(d[1] for d in diffs.values()))
  return rows, worst, worst_cls


def eat_section(upstream_dir: str, *, size: str, batches: list[int], repeats: int, seconds: float,
                layers: int | None) -> str:
  import torch

  from asd_jax.models import eat
  from benchmarks import common

  rows, worst, worst_cls = compare_eat(upstream_dir, size=size, batches=batches, repeats=repeats,
                                       seconds=seconds, layers=layers)
  config = getattr(eat, EAT_SIZES[size])
  depth = layers or config.depth
  stand_ins = upstream_eat.stand_ins_in_use()
  header = ["model", "batch", "median s", "spread s", "clips/s", "speed-up vs PyTorch",
            "max abs diff (features)", "max abs diff (CLS)"]
  return "\n".join([
      "## Side by side: upstream PyTorch EAT vs Flax EAT (float32, same weights and inputs)", "",
      f"{common.machine_description()}; torch {torch.__version__} ({torch.get_num_threads()} threads)", "",
      f"EAT-{size} layout, {depth} x {config.embed_dim}, built by upstream's `Data2VecMultiModel` from the "
      f"`model` group of its pretraining config (no EMA teacher) with random weights, converted by "
      f"`eat.convert_fairseq_state_dict` (decoder tensors skipped); "
      f"stand-ins for {', '.join(stand_ins) if stand_ins else 'nothing'} (`benchmarks/upstream_eat.py`); "
      f"{seconds:g} s clips, the normalised fbank padded to {eat_fbank_frames(seconds)} frames, "
      f"{1 + eat_fbank_frames(seconds) // 16 * 8} tokens; {repeats} timed runs each, alternating. Largest abs "
      f"difference of the final features: {worst:.2e}, of the CLS embedding: {worst_cls:.2e} (values are O(1)). "
      f"Command: `python -m benchmarks.side_by_side --upstream_eat=PATH"
      f"{'' if size == 'base' else ' --eat_size=' + size}`.", "",
      common.markdown_table(header, rows)])


def define_flags() -> None:
  """Defines this CLI's flags; only when run as a program, so importing this module defines none."""
  flags.DEFINE_string("upstream_beats", None,
                      "Folder with upstream BEATs.py and backbone.py (your clone of unilm/beats).")
  flags.DEFINE_string("upstream_eat", None, "Your clone of cwx-worst-one/EAT (the folder holding models/).")
  flags.DEFINE_enum("eat_size", "base", list(EAT_SIZES), "EAT layout to build: EAT-base or EAT-large.")
  flags.DEFINE_list("batches", ["1", "8"], "Batch sizes to compare.")
  flags.DEFINE_integer("repeats", 3, "Timed runs per model and batch (after one warm-up each).")
  flags.DEFINE_float("seconds", 10.0, "Clip length in seconds.")
  flags.DEFINE_integer("layers", None, "Encoder layers of both models (default: the released depth, 12 for BEATs "
                       "and EAT-base, 24 for EAT-large; fewer for a quick check).")
  flags.DEFINE_string("output", "BENCHMARKS.md",
                      "Markdown file whose side_by_side / eat_side_by_side sections are rewritten ('' to print only).")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  if not (f.upstream_beats or f.upstream_eat):
    sys.exit("give --upstream_beats=PATH (the beats/ folder of your clone of github.com/microsoft/unilm) and/or "
             "--upstream_eat=PATH (your clone of github.com/cwx-worst-one/EAT)")
  batches = [int(b) for b in f.batches]
  sections = {}
  if f.upstream_beats:
    sections["side_by_side"] = beats_section(f.upstream_beats, batches=batches, repeats=f.repeats,
                                             seconds=f.seconds, layers=f.layers or 12)
    print(sections["side_by_side"])
  if f.upstream_eat:
    sections["eat_side_by_side"] = eat_section(f.upstream_eat, size=f.eat_size, batches=batches,
                                               repeats=f.repeats, seconds=f.seconds, layers=f.layers)
    print(sections["eat_side_by_side"])
  if f.output:
    from benchmarks import run as runner

    output = pathlib.Path(f.output)
    document = output.read_text() if output.exists() else "# Benchmarks\n"
    for name, section in sections.items():
      document = runner.replace_section(document, name, section)
    output.write_text(document)
    print(f"wrote {output}")


if __name__ == "__main__":
  from asd_jax import cli

  define_flags()
  cli.run(main)  # a wrong upstream folder is one `error:` line, not a traceback
