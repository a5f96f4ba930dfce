"""Channel policies on synthetic DCASE 2026 data: official score of the log-mel row and a frozen tiny EAT per policy.

For each data seed, `asd_jax.data.synth_2026` writes a two-channel dev set (7 machine types, 2 s clips for the
MIMII-derived types and 2.2 / 2.4 s for ToyCar / ToyCarEmu, read as 2 s clips; 30 source + 10 target training
clips and 20 test clips per domain and label); then the pipeline (`asd_jax.pipeline.stages.run`, no training)
embeds every clip with the non-learned log-mel mean/std row and the random-init frozen tiny EAT (the demo's
reference rows, `configs/demo_pipeline.py`) under each channel policy and scores them with SMOTE + cosine 1-NN.
The table gives the official score (harmonic mean of AUC source, AUC target and pAUC over the machine types)
per policy and seed, the mean over seeds and the spread (max - min).

  python -m benchmarks.run --only=channels            # 3 seeds, about 15 minutes on 2 cores
"""

from __future__ import annotations

import os
import statistics
import tempfile

import numpy as np

from asd_jax.audio import channels
from asd_jax.audio import wav as wavlib
from asd_jax.data import layout
from asd_jax.data import records as records_lib
from asd_jax.data import synth_2026
from asd_jax.evaluation import official
from asd_jax.pipeline import stages
from asd_jax.scoring import scorer as scorer_lib
from benchmarks import common
from configs import demo_pipeline

ROWS = ("log_mel", "frozen_eat_random")


def config(root: str, policy: str, keys=ROWS, clip_seconds: float = 2.0):
  """The demo's reference rows only (no pre-training, no export), every row reading `clip_seconds` with `policy`."""
  c = demo_pipeline.get_config()
  c.data.root = root
  c.pretrain = None
  c.model_keys = ",".join(keys)
  c.export = False
  for key in keys:
    c.models[key].frozen.data.channels = policy
    c.models[key].frozen.data.clip_seconds = clip_seconds
  return c


def measure(seeds, *, scale: float, test_clips: int, duration: float, keys=ROWS, policies=channels.POLICIES,
            workdir: str | None = None) -> dict[tuple[str, str, int], float]:
  """{(row, policy, seed): official score} (`workdir`: keep the data and the pipeline folders there)."""
  scores = {}
  with tempfile.TemporaryDirectory() as tmp:
    base = workdir or tmp
    for seed in seeds:
      root = os.path.join(base, f"synth_2026_seed{seed}")
      if not os.path.isdir(root):
        synth_2026.generate(root, scale=scale, seed=seed, duration=duration, target_train=10, test_clips=test_clips)
      for policy in policies:
        result = stages.run(config(root, policy, keys, duration), os.path.join(base, f"run_seed{seed}_{policy}"),
                            progress=False)
        for key in keys:
          scores[key, policy, seed] = result.models[key].evaluation.official_score
  return scores


def log_mel_score(root: str, read) -> float:
  """Official score of the log-mel mean/std row on the dataset `root`, each clip's waveform given by `read(path)`
  (the pipeline's row computed directly: `log_mel_stats.statistics`, then SMOTE + cosine 1-NN per section)."""
  import jax  # pylint: disable=import-outside-toplevel
  from asd_jax.models import log_mel_stats  # pylint: disable=import-outside-toplevel
  stats = jax.jit(log_mel_stats.statistics)
  records = layout.scan_dataset(root)
  bank = [r for r in records if records_lib.is_bank_clip(r)]
  test = [r for r in records if records_lib.is_test_clip(r)]
  embed = lambda rs: np.concatenate([np.asarray(stats(read(r.path)[None])) for r in rs])  # noqa: E731 [n, 2, mel]
  scorer = scorer_lib.fit(embed(bank), bank)
  return official.evaluate_records(test, scorer_lib.score(scorer, embed(test), test).normalized).official_score


def window_ablation(roots, *, duration: float, windows=(1024, 4096, 16384)) -> dict[tuple[str, int], float]:
  """{(variant, seed index): official score} of the log-mel row with `cancel` at other STFT windows (hop a
  quarter window, as the default), and `near` through the same direct path as a check against the pipeline."""
  n = int(round(duration * wavlib.SAMPLE_RATE))

  def reader(policy, stft=channels.CANCEL_STFT):
    return lambda path: channels.apply(wavlib.fix_length(wavlib.read_channels(path), n), policy, stft=stft)

  out = {}
  for i, root in enumerate(roots):
    out["near", i] = log_mel_score(root, reader("near"))
    for w in windows:
      out[f"cancel, {w}-sample window", i] = log_mel_score(
          root, reader("cancel", channels.StftSettings(nperseg=w, hop=w // 4)))
  return out


def table(scores: dict[tuple[str, str, int], float], keys=ROWS) -> str:
  names = {"log_mel": "log-mel mean/std", "frozen_eat_random": "EAT (frozen, random init, tiny)"}
  seeds = sorted({s for _, _, s in scores})
  policies = [p for p in channels.POLICIES if any(k[1] == p for k in scores)]
  rows = []
  for key in keys:
    for policy in policies:
      values = [100 * scores[key, policy, s] for s in seeds]
      rows.append([names.get(key, key), policy, *[f"{v:.2f}" for v in values], f"{statistics.mean(values):.2f}",
                   f"{max(values) - min(values):.2f}"])
  header = ["row", "channels", *[f"seed {s}" for s in seeds], "mean", "spread (max - min)"]
  return common.markdown_table(header, rows)


def ablation_table(scores: dict[tuple[str, int], float]) -> str:
  variants = list(dict.fromkeys(k[0] for k in scores))
  seeds = sorted({i for _, i in scores})
  rows = []
  for v in variants:
    values = [100 * scores[v, i] for i in seeds]
    rows.append([v, *[f"{x:.2f}" for x in values], f"{statistics.mean(values):.2f}"])
  return common.markdown_table(["log-mel row, channels", *[f"seed {i}" for i in seeds], "mean"], rows)


def section(scores, ablation, *, seeds, scale, test_clips, duration, keys=ROWS) -> str:
  """The BENCHMARKS.md section of a `measure` and a `window_ablation`."""
  return "\n".join([
      "## Channel policies on synthetic two-channel DCASE 2026 data (official score, %)",
      "",
      common.machine_description(),
      "",
      f"`asd_jax.data.synth_2026`, seeds {', '.join(map(str, seeds))}: {duration:g} s clips, "
      f"{round(990 * scale)} source + 10 target training clips and {test_clips} test clips per domain and label per "
      "machine type; the pipeline's reference rows and SMOTE + cosine 1-NN scoring, no training.",
      "",
      table(scores, keys),
      "",
      "The cancellation's STFT window (log-mel row, computed directly; its `near` line is the pipeline's row again):",
      "",
      ablation_table(ablation)])


def run(quick: bool = False) -> str:
  if quick:
    seeds, scale, test_clips, duration, keys, windows = (0,), 0.01, 5, 1.0, ("log_mel",), (4096,)
  else:
    seeds, scale, test_clips, duration, keys, windows = (0, 1, 2), 0.03, 20, 2.0, ROWS, (1024, 4096, 16384)
  with tempfile.TemporaryDirectory() as tmp:
    scores = measure(seeds, scale=scale, test_clips=test_clips, duration=duration, keys=keys, workdir=tmp)
    ablation = window_ablation([os.path.join(tmp, f"synth_2026_seed{s}") for s in seeds], duration=duration,
                               windows=windows)
  return section(scores, ablation, seeds=seeds, scale=scale, test_clips=test_clips, duration=duration, keys=keys)
