r"""Synthetic DCASE 2025 Task 2 development dataset: the project's embedded default and test bed.

`python -m asd_jax.data.synth --out work/synth_dcase` writes, for each machine type, exactly the
DCASE 2025 dev layout and names, plus the official evaluator's ground-truth files:

  <out>/<machine>/train/section_00_{source,target}_train_normal_<nnnn>_<attrs>.wav
  <out>/<machine>/test/section_00_{source,target}_test_{normal,anomaly}_<nnnn>_<attrs>.wav
  <out>/<machine>/supplemental/section_00_machine_source_<nnnn>_noAttribute.wav      clean machine sound
  <out>/<machine>/supplemental/section_00_noise_{source,target}_<nnnn>_noAttribute.wav  factory noise only
  <out>/<machine>/attributes_00.csv      file_name,d1p,d1v,d2p,d2v,...  (train and test clips)
  <out>/eval_style/<machine>/test/section_00_<nnnn>.wav   the test clips again (hard links),
                                          shuffled and renamed like the evaluation set
  <out>/ground_truth_data/ground_truth_<machine>_section_00_test.csv        section_00_<nnnn>.wav,<0 normal|1 anomaly>
  <out>/ground_truth_domain/ground_truth_<machine>_section_00_test.csv      section_00_<nnnn>.wav,<0 source|1 target>
  <out>/ground_truth_attributes/ground_truth_<machine>_section_00_test.csv  section_00_<nnnn>.wav,<full dev name without .wav>

`--year 2026` writes two-channel near/far clips of the 2026 dev machine types in the 2026 layout instead
(`asd_jax.data.synth_2026`, which reuses this module's sound model).

The three ground-truth folders mirror nttcslab/dcase2023_task2_evaluator (no header row); the
attributes file maps each evaluation-style short name to its full dev name, which is how a
scorer joins scores of `<machine>/test/<full name>.wav` clips to the official ground truth.
Supplementary-file names follow the real 2025 dev set as third-party material shows it
(`<machine>/supplemental/section_00_machine_source_0000_noAttribute.wav`), with noise-only clips named
the same way with `noise`; `filenames.py` parses them (and the official README's abbreviated form).

Counts (per machine; the real 2025 dev set has 990 source + 10 target training clips and 50
normal + 50 anomalous test clips per domain): source train `round(990 * scale)`, target train
`max(3, round(10 * scale))` (SMOTE needs >= 3), test `max(5, round(50 * scale))` per domain and
label, supplementary `max(3, round(100 * scale))` clean and as many noise-only clips. The default
`scale=0.03` gives 30 + 3 training, 20 test and 6 supplementary clips per machine (~2 s to write
all seven machines at `--duration 10`).

Attributes follow the real dev set's attribute names (ToyCar car/spd/mic, fan m-n, gearbox
volt/wt, valve v1pat/v2pat; bearing pro/vel/loc, ToyTrain trn/spd, slider vel/ac). As in the
real 2025 release, bearing, ToyTrain and slider have their attributes hidden (`noAttribute` in
names and CSV) although the sound still depends on them; `reveal_attributes=True` writes them.

Sound model (all vectorised NumPy, 16 kHz):
  * machine: a harmonic series on a fundamental f0 = spec.f0_hz x product of per-attribute
    factors (each attribute value maps to a stable factor in [0.8, 1.25] and a timbre offset),
    with slow speed wander, per-clip jitter (~1 %), and for event machines (ToyTrain, slider,
    valve) a periodic gating envelope or clicks at an attribute-dependent rate;
  * background: coloured broadband noise (1/f^alpha) plus structured factory noise (hum lines,
    random bursts). The target domain uses other noise (colour, level, hum) and other
    operating points (its own attribute values), i.e. a domain shift;
  * anomalies, one per anomalous clip, strength ~ U(0.1, 1) (`--strength=LO,HI` draws U(LO, HI)): `impulses` (bearing-fault-like
    decaying resonances at a fault rate), `harmonic_shift` (detuned series / extra
    non-integer partial), `modulation` (amplitude modulation), `rubbing` (band-passed noise
    bursts locked to the rotation). Weak ones are hard to hear, so a mean-log-mel + kNN
    baseline lands between chance and perfect.

Every clip uses its own `numpy.random.Generator` seeded from (seed, machine, clip identity), so
adding a machine or changing the counts of another does not change a clip.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import os
import pathlib
import shutil
from collections.abc import Sequence

import numpy as np
import scipy.fft
import scipy.signal
import soundfile

from asd_jax.data import filenames
from asd_jax.data import labels as labels_lib
from asd_jax.data import layout
from asd_jax.data import records as rec

SAMPLE_RATE = 16_000
SECTION = "00"
ANOMALY_KINDS = ("impulses", "harmonic_shift", "modulation", "rubbing")
Attrs = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class MachineSpec:
  """How one synthetic machine type sounds and which attribute combinations it has."""

  name: str
  f0_hz: float  # fundamental before attribute factors
  harmonics: int
  decay: float  # amplitude ratio between successive harmonics
  event_hz: float  # periodic events (clicks / on-off cycles); 0 = continuous
  event_duty: float  # fraction of an event period that sounds; 0 = short clicks
  noise_db: float  # background level relative to the machine, dB
  source: tuple[Attrs, ...]  # attribute combinations of the source domain
  target: tuple[Attrs, ...]  # ... of the target domain (other operating points)
  anomalies: tuple[str, ...]
  hidden_attributes: bool = False  # write noAttribute like the real 2025 dev set


def _combos(**dims: Sequence[str]) -> tuple[Attrs, ...]:
  grids = np.stack(np.meshgrid(*[np.arange(len(v)) for v in dims.values()], indexing="ij"), -1)
  keys = list(dims)
  return tuple(tuple((k, dims[k][i]) for k, i in zip(keys, idx)) for idx in grids.reshape(-1, len(keys)))


MACHINES: dict[str, MachineSpec] = {m.name: m for m in [
    MachineSpec("ToyCar", 180.0, 8, 0.7, 0.0, 0.0, -6.0,
                _combos(car=["A1", "A2"], spd=["28V", "31V"], mic=["1"]),
                _combos(car=["B1"], spd=["34V"], mic=["2"]),
                ("impulses", "rubbing", "harmonic_shift")),
    MachineSpec("ToyTrain", 90.0, 6, 0.6, 2.5, 0.0, -6.0,
                _combos(trn=["A1", "A2"], spd=["6", "8"]), _combos(trn=["B1"], spd=["10"]),
                ("impulses", "modulation", "rubbing"), hidden_attributes=True),
    MachineSpec("bearing", 140.0, 5, 0.55, 0.0, 0.0, -3.0,
                _combos(pro=["A", "B"], vel=["8", "12"], loc=["A"]),
                _combos(pro=["A"], vel=["16"], loc=["D"]),
                ("impulses", "rubbing", "harmonic_shift"), hidden_attributes=True),
    MachineSpec("fan", 60.0, 10, 0.8, 0.0, 0.0, -4.0,
                _combos(**{"m-n": ["W", "X", "Y"]}), _combos(**{"m-n": ["Z"]}),
                ("modulation", "harmonic_shift", "rubbing")),
    MachineSpec("gearbox", 110.0, 9, 0.75, 0.0, 0.0, -5.0,
                _combos(volt=["1.0", "1.5"], wt=["30", "80"]), _combos(volt=["2.0"], wt=["130"]),
                ("impulses", "harmonic_shift", "modulation")),
    MachineSpec("slider", 220.0, 6, 0.6, 0.8, 0.6, -5.0,
                _combos(vel=["300", "700"], ac=["0.03", "0.06"]), _combos(vel=["1100"], ac=["0.12"]),
                ("rubbing", "impulses", "modulation"), hidden_attributes=True),
    MachineSpec("valve", 350.0, 4, 0.5, 1.5, 0.35, -6.0,
                _combos(v1pat=["00", "01"], v2pat=["none"]), _combos(v1pat=["02"], v2pat=["01"]),
                ("impulses", "harmonic_shift", "rubbing")),
]}
DEFAULT_MACHINES = tuple(MACHINES)


def _stable_int(*parts: str) -> int:
  return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "little")


def _clip_rng(seed: int, machine: str, identity: str) -> np.random.Generator:
  return np.random.default_rng([seed, _stable_int(machine), _stable_int(identity)])


def _factor(machine: str, attrs: Attrs, what: str, low: float, high: float) -> float:
  """Product of stable per-attribute-value factors in [low, high] (1 when no attributes)."""
  out = 1.0
  for k, v in attrs:
    u = (_stable_int(machine, k, v, what) % 10_000) / 9_999
    out *= low + (high - low) * u
  return out


# ---------------------------------------------------------------------------------- sounds

def _shaped_noise(rng, n: int, gain: np.ndarray) -> np.ndarray:
  """Unit-RMS float32 noise whose amplitude spectrum is `gain` [n // 2 + 1]. -> [n]"""
  spec = rng.standard_normal((n // 2 + 1, 2), dtype=np.float32).view(np.complex64)[:, 0] * gain
  x = scipy.fft.irfft(spec, n)
  return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _coloured_noise(rng, n: int, alpha: float) -> np.ndarray:
  """Unit-RMS noise with power spectrum ~ 1/f^alpha. -> [n]"""
  f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE).astype(np.float32)
  return _shaped_noise(rng, n, np.maximum(f, 20.0) ** np.float32(-alpha / 2))


def _bandpass_noise(rng, n: int, lo: float, hi: float) -> np.ndarray:
  """Unit-RMS noise in a Gaussian band around (lo + hi) / 2 Hz. -> [n]"""
  f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE).astype(np.float32)
  return _shaped_noise(rng, n, np.exp(-0.5 * ((f - (lo + hi) / 2) / ((hi - lo) / 2)) ** 2))


def _pulse_train(rng, n: int, rate_hz: float, ring_hz: float, decay_s: float) -> np.ndarray:
  """Decaying resonances (ring_hz) struck at rate_hz with timing jitter. -> [n], unit peak-ish."""
  period = SAMPLE_RATE / rate_hz
  count = int(n / period) + 1
  starts = (np.arange(count) * period + rng.uniform(0, period) + rng.normal(0, 0.02 * period, count))
  starts = starts[(starts >= 0) & (starts < n)].astype(int)
  impulses = np.zeros(n)
  impulses[starts] = rng.uniform(0.6, 1.0, starts.size)
  kernel_t = np.arange(int(decay_s * 5 * SAMPLE_RATE)) / SAMPLE_RATE
  kernel = np.exp(-kernel_t / decay_s) * np.sin(2 * np.pi * ring_hz * kernel_t)
  return scipy.signal.oaconvolve(impulses, kernel)[:n]


def _partials(phase: np.ndarray, ratios: np.ndarray, amps: np.ndarray, offsets: np.ndarray,
              f0: float) -> np.ndarray:
  """sum_k amps[k] sin(ratios[k] phase + offsets[k]), partials above 0.45 fs dropped. -> [n]

  Integer ratios use powers of exp(i phase) (one complex multiply per sample and partial
  instead of a sine), the others a direct sine.
  """
  x = np.zeros(phase.size, np.float32)
  unit = np.exp(1j * phase).astype(np.complex64)
  power, k_done = np.ones_like(unit), 0
  for ratio, amp, off in zip(ratios, amps, offsets):
    if ratio * f0 >= 0.45 * SAMPLE_RATE:
      continue
    if float(ratio).is_integer() and ratio > k_done:
      while k_done < ratio:
        power *= unit
        k_done += 1
      x += (power * np.complex64(amp * np.exp(1j * off))).imag
    else:
      x += np.float32(amp) * np.sin(ratio * phase + off).astype(np.float32)
  return x


def _machine_sound(rng, spec: MachineSpec, attrs: Attrs, n: int, anomaly: str | None,
                   strength: float) -> np.ndarray:
  """The machine itself (no background), RMS ~ 1. -> [n]"""
  t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
  f0 = spec.f0_hz * _factor(spec.name, attrs, "f0", 0.8, 1.25) * (1 + rng.normal(0, 0.01))
  decay = np.clip(spec.decay * _factor(spec.name, attrs, "decay", 0.85, 1.15), 0.2, 0.95)
  wander = 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
  k = np.arange(1, spec.harmonics + 1)
  amps = decay ** (k - 1) * rng.lognormal(0, 0.15, k.size)
  ratios = k.astype(float)
  if anomaly == "harmonic_shift":
    # Detune the series (wear changes the speed / stiffness) and add a non-integer partial.
    f0 *= 1 + 0.03 * strength * rng.choice([-1, 1])
    ratios = np.append(ratios, rng.choice([1.5, 2.5, 3.5]))
    amps = np.append(amps, 0.5 * strength)
  phase = 2 * np.pi * f0 * np.cumsum(wander, dtype=np.float64) / SAMPLE_RATE
  x = _partials(phase, ratios, amps, rng.uniform(0, 2 * np.pi, ratios.size), f0)
  x += 0.3 * _coloured_noise(rng, n, 1.0) * _factor(spec.name, attrs, "roughness", 0.5, 1.5)
  # Normal variation: a little amplitude modulation.
  x *= 1 + rng.uniform(0, 0.08) * np.sin(2 * np.pi * rng.uniform(0.5, 4) * t)
  if spec.event_hz:
    rate = spec.event_hz * _factor(spec.name, attrs, "events", 0.8, 1.25)
    if spec.event_duty:  # on/off cycles (slider strokes, valve openings)
      cycle = (t * rate + rng.uniform()) % 1.0
      x *= 0.15 + 0.85 * (cycle < spec.event_duty) * np.sin(np.pi * np.minimum(cycle / spec.event_duty, 1)) ** 2
    else:  # clicks (rail joints)
      x += 2.0 * _pulse_train(rng, n, rate, rng.uniform(800, 1500), 0.01)
  x /= np.sqrt(np.mean(x**2)) + 1e-12
  if anomaly == "impulses":
    fault = _pulse_train(rng, n, f0 * rng.uniform(0.05, 0.12), rng.uniform(2500, 5000), 0.003)
    x += 4.0 * strength * fault / (np.sqrt(np.mean(fault**2)) + 1e-12) * 0.25
  elif anomaly == "modulation":
    x *= 1 + 0.5 * strength * np.sin(2 * np.pi * rng.uniform(3, 12) * t)
  elif anomaly == "rubbing":
    rub = _bandpass_noise(rng, n, 1200, 4000)
    rub *= np.clip(np.sin(2 * np.pi * (f0 / rng.uniform(4, 8)) * t), 0, None) ** 4 * 3
    x += 0.6 * strength * rub
  return x


def _background(rng, spec: MachineSpec, domain: str, n: int) -> np.ndarray:
  """Factory background of a domain, RMS ~ 1. -> [n]"""
  t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
  target = domain == rec.TARGET
  alpha = rng.uniform(1.4, 1.8) if target else rng.uniform(0.6, 1.0)
  x = _coloured_noise(rng, n, alpha)
  hum = 60.0 if target else 50.0
  for h in (1, 2, 3):
    x += 0.3 / h * np.sin(2 * np.pi * hum * h * t + rng.uniform(0, 2 * np.pi))
  for _ in range(rng.poisson(2)):  # occasional bursts (other machines, handling)
    start, length = rng.integers(0, n), int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
    stop = min(n, start + length)
    lo = rng.uniform(300, 3000)
    x[start:stop] += rng.uniform(0.5, 1.5) * _bandpass_noise(rng, stop - start, lo, lo * 1.5) if stop - start > 8 else 0
  return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def synthesize_clip(seed: int, spec: MachineSpec, identity: str, domain: str, attrs: Attrs,
                    n: int, kind: str = rec.KIND_MACHINE, anomaly: str | None = None,
                    strength: float = 0.0) -> np.ndarray:
  """One clip, float32 [n] in [-1, 1], reproducible from (seed, machine, identity)."""
  rng = _clip_rng(seed, spec.name, identity)
  level = 0.05 * 10 ** (rng.uniform(-2, 2) / 20)
  noise_db = spec.noise_db + (4.0 if domain == rec.TARGET else 0.0) + rng.uniform(-2, 2)
  if kind == rec.KIND_NOISE:
    x = level * _background(rng, spec, domain, n)
  else:
    x = level * _machine_sound(rng, spec, attrs, n, anomaly, strength)
    if kind == rec.KIND_MACHINE:
      x += level * 10 ** (noise_db / 20) * _background(rng, spec, domain, n)
  return np.clip(x, -1, 1).astype(np.float32)


# ---------------------------------------------------------------------------------- layout

@dataclasses.dataclass(frozen=True)
class _Plan:
  split: str
  domain: str
  label: str | None
  number: int
  kind: str
  anomaly: str | None = None
  strength: float = 0.0

  @property
  def identity(self) -> str:
    return f"section_{SECTION}_{self.domain}_{self.split}_{self.label or self.kind}_{self.number:04d}"


def counts(scale: float) -> dict[str, int]:
  """Clips per machine for `scale` (see the module docstring)."""
  if scale <= 0:
    raise ValueError(f"scale must be > 0, got {scale}")
  return {"source_train": max(1, round(990 * scale)), "target_train": max(3, round(10 * scale)),
          "test_per_domain_label": max(5, round(50 * scale)), "supplemental": max(3, round(100 * scale))}


def anomaly_of(seed: int, machine: str, domain: str, number: int,
               strength: tuple[float, float] = (0.1, 1.0)) -> tuple[str, float]:
  """(kind, strength) of test anomaly `number` of `machine`'s `domain` in the set written with `seed` and
  `strength` (the same draws `generate` makes), e.g. to score each anomaly kind apart."""
  r = _clip_rng(seed, machine, f"anomaly/{domain}/{number}")
  return str(r.choice(MACHINES[machine].anomalies)), float(r.uniform(*strength))


def _plans(seed: int, spec: MachineSpec, c: dict[str, int],
           strength: tuple[float, float] = (0.1, 1.0)) -> list[_Plan]:
  plans = [_Plan(rec.SPLIT_TRAIN, rec.SOURCE, rec.NORMAL, i, rec.KIND_MACHINE) for i in range(c["source_train"])]
  plans += [_Plan(rec.SPLIT_TRAIN, rec.TARGET, rec.NORMAL, i, rec.KIND_MACHINE) for i in range(c["target_train"])]
  for domain in (rec.SOURCE, rec.TARGET):
    m = c["test_per_domain_label"]
    plans += [_Plan(rec.SPLIT_TEST, domain, rec.NORMAL, i, rec.KIND_MACHINE) for i in range(m)]
    for i in range(m):  # the dev set numbers normal and anomalous clips from 0000 each
      plans.append(_Plan(rec.SPLIT_TEST, domain, rec.ANOMALY, i, rec.KIND_MACHINE,
                         *anomaly_of(seed, spec.name, domain, i, strength)))
  s = c["supplemental"]
  plans += [_Plan(rec.SPLIT_SUPPLEMENTAL, rec.SOURCE, None, i, rec.KIND_CLEAN) for i in range(s)]
  plans += [_Plan(rec.SPLIT_SUPPLEMENTAL, (rec.SOURCE, rec.TARGET)[i % 2], None, i, rec.KIND_NOISE)
            for i in range(s)]
  return plans


def _file_name(p: _Plan, shown: Attrs) -> str:
  attr = filenames.attribute_string(shown)
  if p.split == rec.SPLIT_SUPPLEMENTAL:  # the real 2025 form: what, domain, number, no attributes
    what = "noise" if p.kind == rec.KIND_NOISE else "machine"
    return f"section_{SECTION}_{what}_{p.domain}_{p.number:04d}_{filenames.NO_ATTRIBUTE}.wav"
  return f"section_{SECTION}_{p.domain}_{p.split}_{p.label}_{p.number:04d}_{attr}.wav"


def _link_or_copy(src: pathlib.Path, dst: pathlib.Path) -> None:
  try:
    os.link(src, dst)
  except OSError:
    shutil.copyfile(src, dst)


def generate(out_dir: str | pathlib.Path, *, scale: float = 0.03, seed: int = 0,
             machines: Sequence[str] = DEFAULT_MACHINES, duration: float = 10.0,
             reveal_attributes: bool = False, target_train: int | None = None,
             test_clips: int | None = None, strength: tuple[float, float] = (0.1, 1.0)) -> dict:
  """Writes the synthetic dataset into `out_dir` (must be empty or absent) -> summary dict.

  `target_train` overrides the scaled count of target-domain training clips (the real dev set has 10 per
  machine type whatever the source count); `test_clips` the test clips per domain and label (the real dev set
  has 50; more test clips make the metrics less noisy without changing what is trained on). The other clips
  do not change (every clip has its own seed). `strength` = (lo, hi): each anomaly's strength ~ U(lo, hi)
  (0 < lo <= hi; the anomaly kinds and every other clip stay as with the default).

  Returns:
    {"out_dir", "seed", "scale", "duration", "counts", "machines": {machine: {"clips": {key: n},
     "attributes": {domain: [attribute strings]}, "classes": [label-space names]}},
     "records": [ClipRecord, ...] (what was written, sorted by path)}.
  """
  out = pathlib.Path(out_dir)
  unknown = [m for m in machines if m not in MACHINES]
  if unknown:
    raise ValueError(f"unknown machine type(s) {unknown}; known: {sorted(MACHINES)}")
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"{out}: output folder exists and is not empty")
  if len(strength) != 2:
    raise ValueError(f"strength must be LO,HI (two numbers), got {strength}")
  lo, hi = (float(x) for x in strength)
  if not 0 < lo <= hi:
    raise ValueError(f"strength must be LO,HI with 0 < LO <= HI, got {strength}")
  if duration <= 0:
    raise ValueError(f"duration must be > 0 seconds, got {duration}")
  n = int(round(duration * SAMPLE_RATE))
  c = counts(scale)
  if target_train is not None:
    if target_train < 3:
      raise ValueError(f"target_train must be >= 3 (SMOTE needs 3 target clips), got {target_train}")
    c["target_train"] = int(target_train)
  if test_clips is not None:
    if test_clips < 1:
      raise ValueError(f"test_clips must be >= 1, got {test_clips}")
    c["test_per_domain_label"] = int(test_clips)
  written: list[rec.ClipRecord] = []
  summary = {"out_dir": str(out), "seed": seed, "scale": scale, "duration": duration, "strength": [lo, hi],
             "counts": c, "machines": {}}
  for machine in machines:
    spec = MACHINES[machine]
    mdir = out / machine
    for d in layout.SPLIT_DIRS:
      (mdir / d).mkdir(parents=True, exist_ok=True)
    csv_rows, machine_records = [], []
    tally = collections.Counter()
    combos_seen = collections.defaultdict(set)
    for p in _plans(seed, spec, c, (lo, hi)):
      rng = _clip_rng(seed, machine, "attrs/" + p.identity)
      pool = spec.target if p.domain == rec.TARGET else spec.source
      attrs = pool[rng.integers(len(pool))] if p.kind != rec.KIND_NOISE else ()
      shown = () if (p.split == rec.SPLIT_SUPPLEMENTAL or (spec.hidden_attributes and not reveal_attributes)) else attrs
      name = _file_name(p, shown)
      path = mdir / p.split / name
      wav = synthesize_clip(seed, spec, p.identity, p.domain, attrs, n, p.kind, p.anomaly, p.strength)
      soundfile.write(str(path), wav, SAMPLE_RATE, subtype="PCM_16")
      if p.kind == rec.KIND_MACHINE:
        cells = [x for kv in shown for x in kv] or [filenames.NO_ATTRIBUTE, ""]
        csv_rows.append([f"{machine}/{p.split}/{name}", *cells])
        combos_seen[p.domain].add(filenames.attribute_string(attrs))
      machine_records.append(rec.ClipRecord(
          path=str(path), machine=machine, section=SECTION, split=p.split, domain=p.domain,
          label=p.label, attributes=shown, kind=p.kind))
      tally["/".join(x for x in (p.split, p.domain, p.label or p.kind) if x)] += 1
    width = max(len(r) for r in csv_rows) - 1
    with (mdir / f"attributes_{SECTION}.csv").open("w", newline="") as f:
      w = csv.writer(f, lineterminator="\n")
      w.writerow(["file_name"] + [f"d{i // 2 + 1}{'pv'[i % 2]}" for i in range(width)])
      w.writerows(r + [""] * (width + 1 - len(r)) for r in csv_rows)
    _write_ground_truth(out, machine, seed, machine_records)
    train_like = [r for r in machine_records if r.split != rec.SPLIT_TEST]
    summary["machines"][machine] = {
        "clips": dict(sorted(tally.items())),
        "attributes": {d: sorted(v) for d, v in sorted(combos_seen.items())},
        "classes": labels_lib.LabelSpace.from_records(train_like).names}
    written.extend(machine_records)
  summary["records"] = sorted(written, key=lambda r: r.path)
  return summary


def _write_ground_truth(out: pathlib.Path, machine: str, seed: int, machine_records) -> None:
  tests = sorted((r for r in machine_records if r.split == rec.SPLIT_TEST), key=lambda r: r.path)
  order = _clip_rng(seed, machine, "eval_order").permutation(len(tests))
  eval_dir = out / "eval_style" / machine / "test"
  eval_dir.mkdir(parents=True, exist_ok=True)
  rows = {"data": [], "domain": [], "attributes": []}
  for short_idx, i in enumerate(order):
    r = tests[i]
    short = f"section_{SECTION}_{short_idx:04d}.wav"
    _link_or_copy(pathlib.Path(r.path), eval_dir / short)
    rows["data"].append((short, int(r.label == rec.ANOMALY)))
    rows["domain"].append((short, int(r.domain == rec.TARGET)))
    rows["attributes"].append((short, pathlib.Path(r.path).stem))
  for what, lines in rows.items():
    gt_dir = out / f"ground_truth_{what}"
    gt_dir.mkdir(exist_ok=True)
    with (gt_dir / f"ground_truth_{machine}_section_{SECTION}_test.csv").open("w", newline="") as f:
      csv.writer(f, lineterminator="\n").writerows(lines)


def format_summary(summary: dict) -> str:
  """A plain-text table of what `generate` wrote."""
  lines = [f"synthetic DCASE 2025 dev set in {summary['out_dir']} (seed {summary['seed']}, "
           f"scale {summary['scale']}, {summary['duration']} s clips at {SAMPLE_RATE} Hz)"]
  total = 0
  for machine, s in summary["machines"].items():
    total += sum(s["clips"].values())
    lines.append(f"\n{machine}: {sum(s['clips'].values())} clips")
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in s["clips"].items()))
    for d, combos in s["attributes"].items():
      lines.append(f"  {d} attributes: {', '.join(combos)}")
    lines.append(f"  classes ({len(s['classes'])}): {', '.join(s['classes'])}")
  lines.append(f"\n{total} clips in {len(summary['machines'])} machine types; ground truth in "
               "ground_truth_{data,domain,attributes}/, evaluation-style names in eval_style/")
  return "\n".join(lines)


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if f.year == "2026":  # two-channel near/far clips in the 2026 layout (asd_jax.data.synth_2026)
    from asd_jax.data import synth_2026  # pylint: disable=g-import-not-at-top
    machines = f.machines if f["machines"].present else synth_2026.DEFAULT_MACHINES
    print(synth_2026.format_summary(synth_2026.generate(
        f.out, scale=f.scale, seed=f.seed, machines=machines, duration=f.duration, target_train=f.target_train,
        test_clips=f.test_clips)))
    return
  summary = generate(f.out, scale=f.scale, seed=f.seed, machines=f.machines, duration=f.duration,
                     reveal_attributes=f.reveal_attributes, target_train=f.target_train,
                     test_clips=f.test_clips, strength=tuple(float(x) for x in f.strength))
  print(format_summary(summary))


def define_flags() -> None:
  """Defines this program's flags; called only when run as a program (see `asd_jax.cli`)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "output folder (absent or empty)", required=True)
  flags.DEFINE_enum("year", "2025", ["2025", "2026"], "2025: the DCASE 2025 dev layout (mono); 2026: two-channel "
                    "near/far clips of the 2026 dev machine types (asd_jax.data.synth_2026)")
  flags.DEFINE_float("scale", 0.03, "fraction of the real 2025 dev counts (with floors, see docstring)")
  flags.DEFINE_integer("seed", 0, "random seed")
  flags.DEFINE_list("machines", list(DEFAULT_MACHINES), "machine types to generate")
  flags.DEFINE_float("duration", 10.0, "clip length in seconds")
  flags.DEFINE_integer("target_train", None, "target-domain training clips per machine type (default: scaled, "
                       "at least 3; the real dev set has 10)")
  flags.DEFINE_integer("test_clips", None, "test clips per machine type, domain and label (default: scaled, at "
                       "least 5; the real dev set has 50)")
  flags.DEFINE_list("strength", ["0.1", "1.0"], "LO,HI: each anomaly's strength ~ U(LO, HI)")
  flags.DEFINE_bool("reveal_attributes", False,
                    "write the attributes of bearing/ToyTrain/slider (hidden in the real 2025 dev set)")


if __name__ == "__main__":
  from asd_jax import cli  # pylint: disable=g-import-not-at-top

  define_flags()
  cli.run(main)  # app.run; bad arguments (unknown machine, duration <= 0, a used folder) exit with "error: ..."
