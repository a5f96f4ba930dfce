"""Channel policies on synthetic DCASE 2026 data: `configs/demo_2026.py`'s models, reference rows and systems per policy.

For each data seed, `asd_jax.data.synth_2026` writes the demo's two-channel dev set (7 machine types, 2 s clips for
the MIMII-derived types and 2.2 / 2.4 s for ToyCar / ToyCarEmu, read as 2 s clips; 30 source + 10 target training
clips and 20 test clips per domain and label); then the pipeline runs `configs/demo_2026.py` on it once per channel
policy (`--config.data.channels`, every model's and the pre-training corpus's): the tiny EAT pre-trained on the
set's training clips, the demo's fine-tuned models, its reference rows (the non-learned log-mel mean/std, frozen
random and pre-trained encoders) and the four systems, all scored with SMOTE + cosine 1-NN. The tables give the
official score (harmonic mean of AUC source, AUC target and pAUC over the machine types) per row and policy: the
mean over seeds with the range, whether `cancel` > `near` > `mean` held on every seed, and each seed's value for
the log-mel row and the frozen encoders. A window ablation of the cancellation follows (log-mel row, computed
directly).

  python -m benchmarks.run --only=channels     # 3 seeds x 4 policies x the whole demo; see BENCHMARKS.md for time
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
from configs import demo_2026

# The rows whose every seed is listed: the non-learned one and the frozen encoders (no fine-tuning).
SEED_ROWS = ("log_mel", "frozen_eat", "frozen_eat_random", "frozen_beats")
ORDER = (channels.CANCEL, channels.NEAR, channels.MEAN)  # the expected order of the scores


def config(root: str, policy: str, keys=None, clip_seconds: float = demo_2026.CLIP_SECONDS):
  """`configs/demo_2026.py` on `root` with `policy` (no detector export); `keys`: only those models, without
  pre-training unless one of them starts from the pre-trained EAT; `clip_seconds` for every model."""
  c = demo_2026.get_config()
  c.data.root = root
  c.data.channels = policy
  c.export = False
  if keys is not None:
    c.model_keys = ",".join(keys)
    if not {"feat", "leat", "dual_branch", "frozen_eat"} & set(keys):
      c.pretrain = None
  for key in c.model_keys.split(","):
    for model in (c.models[key].fine_tune, c.models[key].frozen):
      if model is not None:
        model.data.clip_seconds = clip_seconds
  return c


def measure(seeds, *, scale: float, test_clips: int, duration: float, keys=None, policies=channels.POLICIES,
            workdir: str | None = None) -> tuple[dict[tuple[str, str, int], float], dict[str, str]]:
  """`({(row, policy, seed): official score}, {row: name})`, rows being the models and the systems
  (`workdir`: keep the data and the pipeline folders there)."""
  scores, names = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    base = workdir or tmp
    for seed in seeds:
      root = os.path.join(base, f"synth_2026_seed{seed}")
      if not os.path.isdir(root):
        synth_2026.generate(root, scale=scale, seed=seed, duration=duration, target_train=10, test_clips=test_clips)
      for policy in policies:
        result = stages.run(config(root, policy, keys, duration), os.path.join(base, f"run_seed{seed}_{policy}"),
                            progress=False)
        for key, model in result.models.items():
          names[key] = model.spec.name
          scores[key, policy, seed] = model.evaluation.official_score
        for name, system in result.systems.items():
          if system.evaluation is not None and name != stages.GRID_SYSTEM:
            names[name] = name
            scores[name, policy, seed] = system.evaluation.official_score
  return scores, names


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


def _ordered(scores, row, seed) -> bool:
  values = [scores.get((row, p, seed)) for p in ORDER]
  return None not in values and all(a > b for a, b in zip(values, values[1:]))


def table(scores: dict[tuple[str, str, int], float], names: dict[str, str]) -> str:
  """Per row: mean over seeds and range per policy, and whether cancel > near > mean held on every seed."""
  seeds = sorted({s for _, _, s in scores})
  policies = [p for p in channels.POLICIES if any(k[1] == p for k in scores)]
  rows = []
  for row, name in names.items():
    cells = []
    for policy in policies:
      values = [100 * scores[row, policy, s] for s in seeds]
      cells.append(f"{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})")
    held = sum(_ordered(scores, row, s) for s in seeds)
    rows.append([name, *cells, f"{held} of {len(seeds)}"])
  return common.markdown_table(["row", *policies, "cancel > near > mean"], rows)


def seed_table(scores: dict[tuple[str, str, int], float], names: dict[str, str], rows=SEED_ROWS) -> str:
  seeds = sorted({s for _, _, s in scores})
  policies = [p for p in channels.POLICIES if any(k[1] == p for k in scores)]
  out = []
  for row in [r for r in rows if r in names]:
    for policy in policies:
      values = [100 * scores[row, policy, s] for s in seeds]
      out.append([names[row], policy, *[f"{v:.2f}" for v in values], f"{statistics.mean(values):.2f}",
                  f"{max(values) - min(values):.2f}"])
  return common.markdown_table(["row", "channels", *[f"seed {s}" for s in seeds], "mean", "spread (max - min)"], out)


def ablation_table(scores: dict[tuple[str, int], float]) -> str:
  variants = list(dict.fromkeys(k[0] for k in scores))
  seeds = sorted({i for _, i in scores})
  rows = []
  for v in variants:
    values = [100 * scores[v, i] for i in seeds]
    rows.append([v, *[f"{x:.2f}" for x in values], f"{statistics.mean(values):.2f}"])
  return common.markdown_table(["log-mel row, channels", *[f"seed {i}" for i in seeds], "mean"], rows)


def section(scores, names, ablation, *, seeds, scale, test_clips, duration) -> str:
  """The BENCHMARKS.md section of a `measure` and a `window_ablation`."""
  return "\n".join([
      "## Channel policies on synthetic two-channel DCASE 2026 data (official score, %)",
      "",
      common.machine_description(),
      "",
      f"`asd_jax.data.synth_2026`, seeds {', '.join(map(str, seeds))}: {duration:g} s clips, "
      f"{round(990 * scale)} source + 10 target training clips and {test_clips} test clips per domain and label per "
      "machine type; `configs/demo_2026.py` per policy (`--config.data.channels`): pre-training, fine-tuning, "
      "reference rows, SMOTE + cosine 1-NN, the four systems. Mean over the seeds (min-max):",
      "",
      table(scores, names),
      "",
      "Every seed, the rows without fine-tuning:",
      "",
      seed_table(scores, names),
      "",
      "The cancellation's STFT window (log-mel row, computed directly; its `near` line is the pipeline's row again):",
      "",
      ablation_table(ablation)])


def run(quick: bool = False) -> str:
  if quick:
    seeds, scale, test_clips, duration, keys, windows = (0,), 0.01, 5, 1.0, ("log_mel",), (4096,)
  else:
    seeds, scale, test_clips, duration, keys, windows = (0, 1, 2), 0.03, 20, 2.0, None, (1024, 4096, 16384)
  with tempfile.TemporaryDirectory() as tmp:
    scores, names = measure(seeds, scale=scale, test_clips=test_clips, duration=duration, keys=keys, workdir=tmp)
    ablation = window_ablation([os.path.join(tmp, f"synth_2026_seed{s}") for s in seeds], duration=duration,
                               windows=windows)
  return section(scores, names, ablation, seeds=seeds, scale=scale, test_clips=test_clips, duration=duration)
