r"""Synthetic DCASE 2026 Task 2 development set: two-channel near/far clips in the 2026 layout and names.

`python -m asd_jax.data.synth --year 2026 --out work/synth_2026` (or `generate(out_dir, ...)`) writes, for the
seven 2026 dev machine types (`asd_jax.data.releases`):

  <out>/<machine>/train/section_00_{source,target}_train_normal_<nnnn>_<attrs>.wav    2 channels, PCM16, 16 kHz
  <out>/<machine>/test/section_00_{source,target}_test_{normal,anomaly}_<nnnn>_<attrs>.wav
  <out>/<machine>/attributes_00.csv
  <out>/eval_style/..., <out>/ground_truth_{data,domain,attributes}/...   as `asd_jax.data.synth` writes them

No `supplemental/` folder (2026 has none). The names follow the real set: ToyCarEmu's attributes repeat the key
`mic` (`car_B1_spd_2_mic_2_mic_1`); ToyCar, bearingEmu, sliderEmu and valveEmu say `noAttribute` (their sound still
depends on hidden attributes); fan has `spd_1`-`spd_3` in both domains; gearboxEmu has `pro_A`-`pro_F` (source) and
`pro_X`-`pro_Z` (target), and its target normal test clips of `pro_Y` are written `pro_y`, as in the real test set;
ToyCar and ToyCarEmu number their test clips 0000-(4n-1) across the four domain/label categories in a shuffled
order, the others 0000-(n-1) per category. Clip lengths keep the real ratios: `duration` for the MIMII-derived
types, 1.1 x `duration` for ToyCar, 1.2 x for ToyCarEmu (the real 10, 11 and 12 s). Counts as in `synth.counts`.

Sound model. The machine, its anomalies and the factory background are `asd_jax.data.synth`'s (harmonic machine,
four anomaly kinds, 1/f noise with hum and bursts, a target domain with other noise and operating points). What
is new is the recording: two microphones in one hall, with fixed acoustic paths per machine type (drawn once
from (seed, machine): the hall and microphone positions do not change between clips):

  near (channel 0) = level * (machine + g_noise * (p_near * background)) + sensor noise
  far  (channel 1) = level * (a * machine(t - d) + g_noise * (p_far * background)) + sensor noise

  * the machine reaches the far microphone weaker and delayed: a ~ U(-26, -16) dB, d ~ U(7, 28) ms (a near
    microphone at ~0.5 m and a far one 3-10 m away: inverse-distance attenuation and the extra path at 343 m/s);
  * the background (one noise source) reaches each microphone through its own fixed path p = gain x (a delay,
    a direct tap plus three early reflections within 4 ms of it, gains 0.1-0.3 each, so the direct sound
    dominates): 5-25 ms to the near microphone and, to the far one, that plus a path difference of up to the
    microphones' separation either way (triangle inequality: up to 28 ms); the far path's gain is 0-6 dB above
    the near one's (the far microphone stands in the hall, the near one by the machine), so the far microphone
    hears the same noise louder and the machine 16-26 dB weaker;
  * g_noise is the near channel's noise level of `synth` (spec.noise_db, +4 dB in the target domain, +-2 dB per
    clip): the near channel is a 2025-style clip heard through the near path;
  * each microphone adds its own independent noise (sensor self-noise and the incoherent part of the hall's
    field), white, 30 dB below that microphone's background: the part no cancellation can remove.
The near-far difference of the background paths is what per-bin cancellation must model: its delay (up to
28 ms here) against the STFT window (`asd_jax.audio.channels`).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np
import scipy.signal
import soundfile

from asd_jax.data import filenames
from asd_jax.data import labels as labels_lib
from asd_jax.data import records as rec
from asd_jax.data import releases
from asd_jax.data import synth

SAMPLE_RATE = synth.SAMPLE_RATE
SECTION = synth.SECTION
YEAR = 2026
Attrs = synth.Attrs
SENSOR_NOISE_DB = -30.0  # each microphone's independent noise, relative to its background
LENGTH_FACTOR = {"ToyCar": 1.1, "ToyCarEmu": 1.2}  # the real 11 s and 12 s against 10 s
NUMBERED_ACROSS_CATEGORIES = ("ToyCar", "ToyCarEmu")  # test clips 0000-0199 over the four categories


def _mic_mic(cars: Sequence[str], speeds: Sequence[str]) -> tuple[Attrs, ...]:
  """ToyCarEmu's attributes: car, spd and the key `mic` twice, as in the real names."""
  return tuple((("car", c), ("spd", s), ("mic", "2"), ("mic", "1")) for c in cars for s in speeds)


def _spec(base: str, name: str, source, target, hidden: bool, f0_factor: float = 1.0) -> synth.MachineSpec:
  spec = synth.MACHINES[base]
  return dataclasses.replace(spec, name=name, f0_hz=spec.f0_hz * f0_factor, source=source, target=target,
                             hidden_attributes=hidden)


_T = synth._combos  # pylint: disable=protected-access
MACHINES: dict[str, synth.MachineSpec] = {s.name: s for s in [
    _spec("ToyCar", "ToyCar", _T(car=["A1", "A2"], spd=["28V", "31V"]), _T(car=["B1"], spd=["34V"]), True),
    _spec("ToyCar", "ToyCarEmu", _mic_mic(["B1", "B2", "C1", "C2", "D1", "D2"], ["2", "3", "5"]),
          _mic_mic(["A1", "A2"], ["1", "4"]), False, f0_factor=0.8),
    _spec("bearing", "bearingEmu", _T(vel=["8", "12"]), _T(vel=["16"]), True),
    _spec("fan", "fan", _T(spd=["1", "2", "3"]), _T(spd=["1", "2", "3"]), False),
    _spec("gearbox", "gearboxEmu", _T(pro=list("ABCDEF")), _T(pro=list("XYZ")), False),
    _spec("slider", "sliderEmu", _T(vel=["300", "700"]), _T(vel=["1100"]), True),
    _spec("valve", "valveEmu", _T(v1pat=["00", "01"]), _T(v1pat=["02"]), True),
]}
DEFAULT_MACHINES = releases.machines(YEAR, releases.DEV)


@dataclasses.dataclass(frozen=True)
class Paths:
  """The fixed acoustic paths of one machine type's hall (impulse responses at 16 kHz, all the same length)."""

  machine_far: np.ndarray  # [taps] machine -> far microphone (the near microphone hears the machine directly)
  noise_near: np.ndarray  # [taps] background -> near microphone
  noise_far: np.ndarray  # [taps] background -> far microphone


def _path(rng: np.random.Generator, gain: float, delay_s: float, taps: int, reflections: int = 3) -> np.ndarray:
  """gain x (a direct tap at delay_s + `reflections` taps within 4 ms after it, gains 0.1-0.3, random signs)."""
  h = np.zeros(taps)
  d = int(round(delay_s * SAMPLE_RATE))
  h[d] = 1.0
  for _ in range(reflections):
    h[d + rng.integers(1, int(0.004 * SAMPLE_RATE))] += rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.3)
  return gain * h


def hall_paths(seed: int, machine: str) -> Paths:
  """The paths of `machine`'s hall for dataset `seed` (see the module docstring for the ranges)."""
  rng = synth._clip_rng(seed, machine, "hall")  # pylint: disable=protected-access
  taps = int(0.065 * SAMPLE_RATE)  # 25 + 28 ms of delays + 4 ms of reflections fit
  separation_s = rng.uniform(0.007, 0.028)  # extra travel time to the far microphone, 2.5-9.5 m
  machine_far = _path(rng, 10 ** (rng.uniform(-26, -16) / 20), separation_s, taps, reflections=0)
  near_s = rng.uniform(0.005, 0.025)  # the noise source's travel time to the near microphone
  # Its path difference to the two microphones is at most their separation (triangle inequality).
  far_s = near_s + separation_s + rng.uniform(-1, 1) * separation_s
  noise_near = _path(rng, 1.0, near_s + separation_s, taps)
  noise_far = _path(rng, 10 ** (rng.uniform(0, 6) / 20), far_s, taps)
  return Paths(machine_far, noise_near / np.sqrt(np.sum(noise_near**2)), noise_far / np.sqrt(np.sum(noise_near**2)))


def synthesize_pair(seed: int, spec: synth.MachineSpec, identity: str, domain: str, attrs: Attrs, n: int,
                    paths: Paths, anomaly: str | None = None, strength: float = 0.0) -> np.ndarray:
  """One two-channel clip, float32 [n, 2] in [-1, 1] (column 0 near, 1 far), reproducible from (seed, machine,
  identity)."""
  rng = synth._clip_rng(seed, spec.name, identity)  # pylint: disable=protected-access
  level = 0.05 * 10 ** (rng.uniform(-2, 2) / 20)
  noise_db = spec.noise_db + (4.0 if domain == rec.TARGET else 0.0) + rng.uniform(-2, 2)
  taps = paths.noise_near.size
  machine = synth._machine_sound(rng, spec, attrs, n + taps - 1, anomaly, strength)  # pylint: disable=protected-access
  background = synth._background(rng, spec, domain, n + taps - 1)  # pylint: disable=protected-access
  valid = lambda x, h: scipy.signal.oaconvolve(x, h, mode="valid")  # noqa: E731  [n + taps - 1] -> [n]
  noise_gain = 10 ** (noise_db / 20)
  noise_near = noise_gain * valid(background, paths.noise_near)
  noise_far = noise_gain * valid(background, paths.noise_far)
  near = machine[taps - 1:] + noise_near
  far = valid(machine, paths.machine_far) + noise_far
  sensor = 10 ** (SENSOR_NOISE_DB / 20)
  near += sensor * np.sqrt(np.mean(noise_near**2)) * rng.standard_normal(n)
  far += sensor * np.sqrt(np.mean(noise_far**2)) * rng.standard_normal(n)
  return np.clip(level * np.stack([near, far], axis=1), -1, 1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Plan:
  split: str
  domain: str
  label: str
  index: int  # within its category
  number: int  # in the file name
  anomaly: str | None = None
  strength: float = 0.0

  @property
  def identity(self) -> str:
    return f"section_{SECTION}_{self.domain}_{self.split}_{self.label}_{self.index:04d}"


def _plans(seed: int, spec: synth.MachineSpec, c: dict[str, int]) -> list[_Plan]:
  plans = [_Plan(rec.SPLIT_TRAIN, rec.SOURCE, rec.NORMAL, i, i) for i in range(c["source_train"])]
  plans += [_Plan(rec.SPLIT_TRAIN, rec.TARGET, rec.NORMAL, i, i) for i in range(c["target_train"])]
  m = c["test_per_domain_label"]
  tests = []
  for domain in (rec.SOURCE, rec.TARGET):
    tests += [(domain, rec.NORMAL, i, None, 0.0) for i in range(m)]
    for i in range(m):
      r = synth._clip_rng(seed, spec.name, f"anomaly/{domain}/{i}")  # pylint: disable=protected-access
      tests.append((domain, rec.ANOMALY, i, str(r.choice(spec.anomalies)), float(r.uniform(0.1, 1.0))))
  if spec.name in NUMBERED_ACROSS_CATEGORIES:
    order_rng = synth._clip_rng(seed, spec.name, "test_numbers")  # pylint: disable=protected-access
    numbers = order_rng.permutation(len(tests))
  else:
    numbers = [i for _, _, i, _, _ in tests]
  plans += [_Plan(rec.SPLIT_TEST, d, label, i, int(k), a, s) for (d, label, i, a, s), k in zip(tests, numbers)]
  return plans


def _shown(spec: synth.MachineSpec, p: _Plan, attrs: Attrs) -> Attrs:
  """The attributes the name shows: none when hidden; gearboxEmu's target normal test clips write `pro_y`."""
  if spec.hidden_attributes:
    return ()
  if spec.name == "gearboxEmu" and (p.split, p.domain, p.label) == (rec.SPLIT_TEST, rec.TARGET, rec.NORMAL):
    return tuple((k, "y" if (k, v) == ("pro", "Y") else v) for k, v in attrs)
  return attrs


def generate(out_dir: str | pathlib.Path, *, scale: float = 0.03, seed: int = 0,
             machines: Sequence[str] = DEFAULT_MACHINES, duration: float = 10.0, target_train: int | None = None,
             test_clips: int | None = None) -> dict:
  """Writes the synthetic 2026 dev set into `out_dir` (absent or empty) -> summary dict (as `synth.generate`'s,
  plus "paths": {machine: Paths} and "year": 2026)."""
  out = pathlib.Path(out_dir)
  unknown = [m for m in machines if m not in MACHINES]
  if unknown:
    raise ValueError(f"unknown 2026 machine type(s) {unknown}; known: {list(DEFAULT_MACHINES)}")
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"{out}: output folder exists and is not empty")
  if duration <= 0:
    raise ValueError(f"duration must be > 0 seconds, got {duration}")
  c = synth.counts(scale)
  if target_train is not None:
    if target_train < 3:
      raise ValueError(f"target_train must be >= 3 (SMOTE needs 3 target clips), got {target_train}")
    c["target_train"] = int(target_train)
  if test_clips is not None:
    if test_clips < 1:
      raise ValueError(f"test_clips must be >= 1, got {test_clips}")
    c["test_per_domain_label"] = int(test_clips)
  del c["supplemental"]
  summary = {"out_dir": str(out), "seed": seed, "scale": scale, "duration": duration, "counts": c, "year": YEAR,
             "machines": {}, "paths": {}}
  written: list[rec.ClipRecord] = []
  for machine in machines:
    spec = MACHINES[machine]
    paths = hall_paths(seed, machine)
    n = int(round(duration * LENGTH_FACTOR.get(machine, 1.0) * SAMPLE_RATE))
    mdir = out / machine
    for d in (rec.SPLIT_TRAIN, rec.SPLIT_TEST):
      (mdir / d).mkdir(parents=True, exist_ok=True)
    csv_rows, machine_records = [], []
    tally = collections.Counter()
    combos_seen = collections.defaultdict(set)
    for p in _plans(seed, spec, c):
      rng = synth._clip_rng(seed, machine, "attrs/" + p.identity)  # pylint: disable=protected-access
      pool = spec.target if p.domain == rec.TARGET else spec.source
      attrs = pool[rng.integers(len(pool))]
      shown = _shown(spec, p, attrs)
      name = f"section_{SECTION}_{p.domain}_{p.split}_{p.label}_{p.number:04d}_{filenames.attribute_string(shown)}.wav"
      path = mdir / p.split / name
      pair = synthesize_pair(seed, spec, p.identity, p.domain, attrs, n, paths, p.anomaly, p.strength)
      soundfile.write(str(path), pair, SAMPLE_RATE, subtype="PCM_16")
      cells = [x for kv in shown for x in kv] or [filenames.NO_ATTRIBUTE, ""]
      csv_rows.append([f"{machine}/{p.split}/{name}", *cells])
      combos_seen[p.domain].add(filenames.attribute_string(attrs))
      machine_records.append(rec.ClipRecord(path=str(path), machine=machine, section=SECTION, split=p.split,
                                            domain=p.domain, label=p.label, attributes=shown))
      tally[f"{p.split}/{p.domain}/{p.label}"] += 1
    width = max(len(r) for r in csv_rows) - 1
    with (mdir / f"attributes_{SECTION}.csv").open("w", newline="") as f:
      w = csv.writer(f, lineterminator="\n")
      w.writerow(["file_name"] + [f"d{i // 2 + 1}{'pv'[i % 2]}" for i in range(width)])
      w.writerows(r + [""] * (width + 1 - len(r)) for r in csv_rows)
    synth._write_ground_truth(out, machine, seed, machine_records)  # pylint: disable=protected-access
    summary["machines"][machine] = {
        "clips": dict(sorted(tally.items())), "seconds": n / SAMPLE_RATE,
        "attributes": {d: sorted(v) for d, v in sorted(combos_seen.items())},
        "classes": labels_lib.LabelSpace.from_records(r for r in machine_records if r.split == rec.SPLIT_TRAIN).names}
    summary["paths"][machine] = paths
    written.extend(machine_records)
  summary["records"] = sorted(written, key=lambda r: r.path)
  return summary


def format_summary(summary: dict) -> str:
  """A plain-text table of what `generate` wrote."""
  lines = [f"synthetic DCASE 2026 dev set in {summary['out_dir']} (seed {summary['seed']}, scale {summary['scale']}, "
           f"2 channels: 0 near, 1 far; {SAMPLE_RATE} Hz)"]
  for machine, s in summary["machines"].items():
    p = summary["paths"][machine]
    lines.append(f"\n{machine}: {sum(s['clips'].values())} clips of {s['seconds']:g} s; machine at the far microphone "
                 f"{20 * np.log10(np.max(np.abs(p.machine_far))):.1f} dB, "
                 f"{np.argmax(np.abs(p.machine_far)) / SAMPLE_RATE * 1e3:.1f} ms later")
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in s["clips"].items()))
    lines.append(f"  classes ({len(s['classes'])}): {', '.join(s['classes'])}")
  return "\n".join(lines)
