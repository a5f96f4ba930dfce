r"""Side by side in one process: the upstream PyTorch BEATs and this Flax BEATs on the same weights and inputs.

  python -m benchmarks.side_by_side --upstream_beats=/path/to/your/clone/of/unilm/beats

The upstream code is never part of this project: it is imported at run time from the folder you give
(your own clone of microsoft/unilm, its `beats/` folder holding `BEATs.py` and `backbone.py`). A full-size
upstream model (the released BEATs_iter3+ layout) is built in PyTorch with random weights, its
`state_dict()` goes through our strict `beats.convert_state_dict`, and both models encode the same
normalised fbank (made by our Kaldi front end from synthetic audio; the front end has its own fixture
parity test). Timing alternates between the two models, so load on the machine hits both alike. Reports
clips/s of each, the speed ratio (Flax / PyTorch), and the max abs difference of the final-layer features.
Results go into the `side_by_side` section of BENCHMARKS.md (`--output=''` to only print them).

torchaudio is only needed by upstream's own fbank (`preprocess`), which this comparison bypasses: if it is
not installed, an empty stand-in module is registered so `BEATs.py` imports.

EAT (`--upstream_eat`): cwx-worst-one/EAT builds its model from fairseq (`fairseq.models`,
`fairseq.modules.EMAModule`, omegaconf configs), which does not install on Python 3.11 with NumPy 2; the
EAT fixtures made from that code (tests/models/test_eat.py) are the parity check there. See BENCHMARKS.md.
"""

from __future__ import annotations

import pathlib
import sys
import types

import numpy as np
from absl import app, flags

SAMPLE_RATE = 16000


def import_upstream_beats(path: str | pathlib.Path) -> types.ModuleType:
  """Imports upstream `BEATs.py` from `path` (a folder), without torchaudio if it is absent."""
  path = pathlib.Path(path).expanduser().resolve()
  for name in ("BEATs.py", "backbone.py"):
    if not (path / name).is_file():
      raise FileNotFoundError(f"--upstream_beats={path}: expected upstream's {name} there (the beats/ folder of "
                              "a clone of github.com/microsoft/unilm)")
  try:
    import torchaudio  # noqa: F401
  except ImportError:
    stand_in = types.ModuleType("torchaudio")
    stand_in.compliance = types.ModuleType("torchaudio.compliance")
    stand_in.compliance.kaldi = types.ModuleType("torchaudio.compliance.kaldi")
    sys.modules.update({"torchaudio": stand_in, "torchaudio.compliance": stand_in.compliance,
                        "torchaudio.compliance.kaldi": stand_in.compliance.kaldi})
  sys.path.insert(0, str(path))
  try:
    import BEATs as upstream  # noqa: N813  (upstream's module name)
  finally:
    sys.path.remove(str(path))
  return upstream


def compare_beats(upstream_dir: str, *, batches: list[int], repeats: int, seconds: float,
                  layers: int = 12) -> tuple[list[list], float]:
  """Rows `[model, batch, median s, spread s, clips/s, Flax speed-up, max |diff|]` and the largest diff."""
  import dataclasses

  import jax
  import jax.numpy as jnp
  import torch

  from asd_jax.audio import fbank as fb
  from asd_jax.models import beats
  from asd_jax.training import microbatch
  from benchmarks import common

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
    diffs = {"PyTorch upstream (eager)": 0.0}
    for name, forward in forwards.items():
      diffs[name] = float(np.max(np.abs(np.asarray(forward(params, x)) - expected)))
    worst = max(worst, *diffs.values())

    def run_torch():
      with torch.inference_mode():
        torch_model.extract_features(torch_input)

    fns = {"PyTorch upstream (eager)": run_torch}
    fns.update({name: (lambda f=f: jax.block_until_ready(f(params, x))) for name, f in forwards.items()})
    timed = common.time_interleaved(fns, repeats=repeats, warmup=1)
    torch_time = timed["PyTorch upstream (eager)"][0]
    for name, (median, spread) in timed.items():
      rows.append([name, batch, median, spread, batch / median, torch_time / median,
                   "-" if name.startswith("PyTorch") else f"{diffs[name]:.2e}"])
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


def define_flags() -> None:
  """Defines this CLI's flags; only when run as a program, so importing this module defines none."""
  flags.DEFINE_string("upstream_beats", None,
                      "Folder with upstream BEATs.py and backbone.py (your clone of unilm/beats).")
  flags.DEFINE_string("upstream_eat", None, "Clone of cwx-worst-one/EAT (needs fairseq; see the docstring).")
  flags.DEFINE_list("batches", ["1", "8"], "Batch sizes to compare.")
  flags.DEFINE_integer("repeats", 3, "Timed runs per model and batch (after one warm-up each).")
  flags.DEFINE_float("seconds", 10.0, "Clip length in seconds.")
  flags.DEFINE_integer("layers", 12, "Encoder layers (12 = the released model; fewer for a quick check).")
  flags.DEFINE_string("output", "BENCHMARKS.md", "Markdown file whose side_by_side section is rewritten.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  if f.upstream_eat:
    sys.exit("--upstream_eat is not supported: upstream EAT needs fairseq, which does not install on this "
             "stack (Python 3.11, NumPy 2); see the module docstring and BENCHMARKS.md")
  if not f.upstream_beats:
    sys.exit("give --upstream_beats=PATH (the beats/ folder of your clone of github.com/microsoft/unilm)")
  section = beats_section(f.upstream_beats, batches=[int(b) for b in f.batches],
                          repeats=f.repeats, seconds=f.seconds, layers=f.layers)
  print(section)
  if f.output:
    from benchmarks import run as runner

    output = pathlib.Path(f.output)
    document = output.read_text() if output.exists() else "# Benchmarks\n"
    output.write_text(runner.replace_section(document, "side_by_side", section))
    print(f"wrote {output}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
