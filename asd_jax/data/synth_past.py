r"""Synthetic "earlier years": other machine types in the DCASE 2020 and 2023 layouts, as pre-training material.

The report pre-trains EAT on the DCASE 2020-2024 Task 2 sets (other machine types than 2025's, recorded in
those years' layouts) together with AudioSet. `asd_jax.data.synth` writes the 2025 dev set's seven machine
types; this generator writes six *other* machine types with their own sound models, in past years'
layouts, for the same role in the demo's unlabelled pre-training corpus:

  python -m asd_jax.data.synth_past --out work/synth_past        # 320 clips of 2 s, 21 MB, about 10 s on 2 busy cores

  <out>/dcase2020/<machine>/train/normal_id_<ii>_<nnnnnnnn>.wav             pump, ToyConveyor (2020 dev)
  <out>/dcase2020/<machine>/test/{normal,anomaly}_id_<ii>_<nnnnnnnn>.wav
  <out>/dcase2023/<machine>/train/section_00_{source,target}_train_normal_<nnnn>_<attrs>.wav
  <out>/dcase2023/<machine>/test/section_00_{source,target}_test_{normal,anomaly}_<nnnn>_<attrs>.wav
  <out>/dcase2023/<machine>/attributes_00.csv                             ToyDrone, Vacuum, grinder, shaker

Default counts per machine type (`--train` scales them): 2020: two machine ids x 24 training clips,
2 normal + 2 anomalous test clips per id; 2023: 40 source + 4 target training clips, 2 normal + 2
anomalous test clips per domain. The test clips exist because the real trees have them; a corpus leaves
them out by default (`asd_jax.data.corpus_sources`), so pre-training never hears an anomaly.

Sound models (vectorised NumPy, 16 kHz; none of them is the harmonic-series model of `synth`):
  * pump: a reciprocating pump; pressure pulses (raised-cosine thumps) at the stroke rate x cylinders,
    flow noise modulated by them, motor hum. Anomalies: cavitation crackle, a leak hiss.
  * ToyConveyor: a belt over rollers; roller ticks at the belt rate, a gear-mesh whine frequency-modulated
    by the roller rate. Anomalies: belt slip (speed wobble), debris clicks.
  * ToyDrone: four rotors with detuned blade-pass sawtooth spectra and independent speed drift, wind
    noise. Anomaly: a chipped blade (one rotor amplitude-modulated at its shaft rate).
  * Vacuum: a turbine whine (a tone in narrow-band noise at a few kHz) over broadband airflow noise, with
    a slowly varying suction level. Anomalies: clogging (pitch rises, airflow drops), a rattle.
  * grinder: a resonant broadband contact noise switched on and off by random contact periods, spindle
    tone. Anomaly: a cracked wheel (impulses at the spindle rate).
  * shaker: a vibration table driven by a sine through a saturating (tanh) amplifier, so harmonics grow
    with the drive level. Anomaly: a loose bolt (rattles at the drive peaks).
Attributes (machine ids in 2020, named attributes in 2023) change the operating point (rates,
frequencies, levels); the 2023 target domain uses other operating points and another background, as in
the real sets. Every clip has its own generator seeded from (seed, machine, clip identity).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import pathlib
from collections.abc import Callable, Sequence

import numpy as np
import scipy.signal
import soundfile

from asd_jax.data import filenames
from asd_jax.data import records as rec

SAMPLE_RATE = 16_000
Attrs = tuple[tuple[str, str], ...]


# ---------------------------------------------------------------------------------------------- helpers

def _stable_int(*parts: str) -> int:
  return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "little")


def _rng(seed: int, *parts: str) -> np.random.Generator:
  return np.random.default_rng([seed, *(_stable_int(p) for p in parts)])


def _unit_rms(x: np.ndarray) -> np.ndarray:
  return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _noise(rng, n: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """Unit-RMS noise with amplitude spectrum gain(f Hz). -> [n]"""
  f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
  spec = (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) * gain(f)
  return _unit_rms(np.fft.irfft(spec, n))


def _pink(rng, n: int, alpha: float = 1.0) -> np.ndarray:
  return _noise(rng, n, lambda f: np.maximum(f, 20.0) ** (-alpha / 2))


def _band(rng, n: int, centre: float, width: float) -> np.ndarray:
  return _noise(rng, n, lambda f: np.exp(-0.5 * ((f - centre) / width) ** 2))


def _impulses(rng, n: int, times_s: np.ndarray, ring_hz: float, decay_s: float) -> np.ndarray:
  """Decaying resonances struck at `times_s`. -> [n]"""
  hits = np.zeros(n)
  idx = (times_s * SAMPLE_RATE).astype(int)
  idx = idx[(idx >= 0) & (idx < n)]
  np.add.at(hits, idx, rng.uniform(0.5, 1.0, idx.size))
  t = np.arange(int(5 * decay_s * SAMPLE_RATE)) / SAMPLE_RATE
  return scipy.signal.oaconvolve(hits, np.exp(-t / decay_s) * np.sin(2 * np.pi * ring_hz * t))[:n]


def _phase(rng, n: int, f_hz: float, drift: float, drift_hz: float) -> np.ndarray:
  """Running phase (rad) of a rotation at f_hz with a slow random speed drift. -> [n]"""
  t = np.arange(n) / SAMPLE_RATE
  inst = f_hz * (1 + drift * np.sin(2 * np.pi * drift_hz * t + rng.uniform(0, 2 * np.pi)))
  return 2 * np.pi * np.cumsum(inst) / SAMPLE_RATE


def _param(machine: str, attrs: Attrs, what: str, low: float, high: float) -> float:
  """A stable value in [low, high] per attribute combination (the operating point)."""
  u = (_stable_int(machine, filenames.attribute_string(attrs), what) % 10_000) / 9_999
  return low + (high - low) * u


# ---------------------------------------------------------------------------------------------- sounds

def _pump(rng, attrs, n, anomaly, strength):
  t = np.arange(n) / SAMPLE_RATE
  stroke = _param("pump", attrs, "stroke", 3.0, 7.0) * rng.uniform(0.98, 1.02)
  cylinders = 2 + int(_param("pump", attrs, "cylinders", 0, 2.99))
  cycle = (t * stroke * cylinders + rng.uniform()) % 1.0
  pulse = np.where(cycle < 0.3, 0.5 - 0.5 * np.cos(2 * np.pi * cycle / 0.3), 0.0)
  thump = _band(rng, n, _param("pump", attrs, "body", 80, 200), 40) * pulse
  flow = _band(rng, n, _param("pump", attrs, "flow", 600, 1400), 500) * (0.4 + 0.6 * pulse)
  hum = sum(0.2 / k * np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) for k in (1, 2, 3))
  x = 1.5 * thump + flow + hum
  if anomaly == "cavitation":
    x += 3 * strength * _band(rng, n, 5000, 1500) * (rng.random(n) < 0.002 * (1 + 4 * pulse))
  elif anomaly == "leak":
    x += 0.8 * strength * _band(rng, n, 4500, 800)
  return x


def _conveyor(rng, attrs, n, anomaly, strength):
  t = np.arange(n) / SAMPLE_RATE
  belt = _param("ToyConveyor", attrs, "belt", 4.0, 9.0)
  if anomaly == "belt_slip":
    belt_phase = _phase(rng, n, belt, 0.15 * strength, rng.uniform(0.5, 2))
  else:
    belt_phase = _phase(rng, n, belt, 0.01, 0.2)
  ticks = _impulses(rng, n, np.flatnonzero(np.diff(np.floor(belt_phase / (2 * np.pi))) > 0) / SAMPLE_RATE,
                    _param("ToyConveyor", attrs, "tick", 1500, 3000), 0.004)
  mesh = _param("ToyConveyor", attrs, "mesh", 400, 900)
  whine = np.sin(2 * np.pi * mesh * t + 3.0 * np.sin(belt_phase)) + 0.4 * np.sin(4 * np.pi * mesh * t)
  x = 0.5 * _unit_rms(ticks) + whine + 0.3 * _pink(rng, n, 1.2)
  if anomaly == "debris":
    x += 2 * strength * _unit_rms(_impulses(rng, n, np.sort(rng.uniform(0, n / SAMPLE_RATE, 12)), 3500, 0.002))
  return x


def _drone(rng, attrs, n, anomaly, strength):
  base = _param("ToyDrone", attrs, "bpf", 140, 240)
  x = 0.4 * _pink(rng, n, 1.6)  # wind
  broken = int(rng.integers(4))
  for rotor in range(4):
    phase = _phase(rng, n, base * rng.uniform(0.97, 1.03), 0.01, rng.uniform(0.2, 1.0))
    saw = sum(np.sin(k * phase) / k for k in range(1, 12))
    if anomaly == "chipped_blade" and rotor == broken:
      saw *= 1 + 0.8 * strength * np.sin(phase / 2)  # two blades: the shaft turns at half the blade rate
    x += 0.5 * saw
  return x


def _vacuum(rng, attrs, n, anomaly, strength):
  t = np.arange(n) / SAMPLE_RATE
  turbine = _param("Vacuum", attrs, "turbine", 2000, 4500)
  airflow = 1.0
  if anomaly == "clog":
    turbine *= 1 + 0.08 * strength
    airflow = 1 - 0.6 * strength
  level = 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
  x = (0.5 * np.sin(2 * np.pi * turbine * t) + 0.5 * _band(rng, n, turbine, 60)) * level
  x += airflow * _noise(rng, n, lambda f: 1 / (1 + (f / 1500) ** 2)) * level
  if anomaly == "rattle":
    x += 2 * strength * _unit_rms(_impulses(rng, n, np.cumsum(rng.exponential(0.05, 60)), 900, 0.01))
  return x


def _grinder(rng, attrs, n, anomaly, strength):
  t = np.arange(n) / SAMPLE_RATE
  spindle = _param("grinder", attrs, "spindle", 40, 90)
  resonance = _param("grinder", attrs, "resonance", 1500, 3500)
  contact = np.zeros(n)
  pos = 0
  while pos < n:  # alternating contact / no-contact periods
    on, off = (int(rng.uniform(0.2, 0.8) * SAMPLE_RATE) for _ in range(2))
    contact[pos:pos + on] = 1
    pos += on + off
  contact = scipy.signal.lfilter([0.002], [1, -0.998], contact)  # soft attack and release
  x = (1.5 * _band(rng, n, resonance, 700) + _pink(rng, n, 0.5)) * (0.1 + contact / (contact.max() + 1e-9))
  x += 0.3 * np.sin(2 * np.pi * spindle * t) + 0.15 * np.sin(4 * np.pi * spindle * t)
  if anomaly == "cracked_wheel":
    x += 2 * strength * _unit_rms(_impulses(rng, n, np.arange(0, n / SAMPLE_RATE, 1 / spindle), 4000, 0.002))
  return x


def _shaker(rng, attrs, n, anomaly, strength):
  drive = _param("shaker", attrs, "drive", 25, 160)
  gain = _param("shaker", attrs, "gain", 1.0, 4.0)
  phase = _phase(rng, n, drive, 0.002, 0.1)
  x = np.tanh(gain * np.sin(phase)) + 0.2 * _pink(rng, n, 1.0)
  if anomaly == "loose_bolt":
    peaks = np.flatnonzero(np.diff(np.floor(phase / (2 * np.pi) + 0.25)) > 0) / SAMPLE_RATE
    x += 2 * strength * _unit_rms(_impulses(rng, n, peaks, 2500, 0.003))
  return x


# ---------------------------------------------------------------------------------------------- machines

@dataclasses.dataclass(frozen=True)
class PastMachine:
  """One machine type of the synthetic past years."""

  name: str
  year: int  # layout: 2020 (machine ids in the names) or 2023 (sections, domains, attributes)
  sound: Callable  # (rng, attrs, n, anomaly, strength) -> [n]
  anomalies: tuple[str, ...]
  source: tuple[Attrs, ...]  # 2020: one entry per machine id, (("id", "00"),) ...
  target: tuple[Attrs, ...] = ()


def _grid(**dims: Sequence[str]) -> tuple[Attrs, ...]:
  combos: list[Attrs] = [()]
  for key, values in dims.items():
    combos = [c + ((key, v),) for c in combos for v in values]
  return tuple(combos)


MACHINES: dict[str, PastMachine] = {m.name: m for m in [
    PastMachine("pump", 2020, _pump, ("cavitation", "leak"), _grid(id=["00", "02"])),
    PastMachine("ToyConveyor", 2020, _conveyor, ("belt_slip", "debris"), _grid(id=["01", "02"])),
    PastMachine("ToyDrone", 2023, _drone, ("chipped_blade",), _grid(spd=["1", "2"], mic=["1"]),
                _grid(spd=["3"], mic=["2"])),
    PastMachine("Vacuum", 2023, _vacuum, ("clog", "rattle"), _grid(car=["A", "B"], spd=["1", "2"]),
                _grid(car=["C"], spd=["3"])),
    PastMachine("grinder", 2023, _grinder, ("cracked_wheel",), _grid(grindstone=["1", "2"], plate=["1"]),
                _grid(grindstone=["3"], plate=["2"])),
    PastMachine("shaker", 2023, _shaker, ("loose_bolt",), _grid(speed=["500", "700"]), _grid(speed=["1000"])),
]}


def synthesize(seed: int, machine: PastMachine, identity: str, attrs: Attrs, n: int, domain: str = rec.SOURCE,
               anomaly: str | None = None, strength: float = 0.0) -> np.ndarray:
  """One clip float32 [n] in [-1, 1]: machine sound plus a domain's background, reproducible from the identity."""
  rng = _rng(seed, machine.name, identity)
  x = _unit_rms(machine.sound(rng, attrs, n, anomaly, strength))
  target = domain == rec.TARGET
  background = _pink(rng, n, 1.5 if target else 0.8)
  x += 10 ** ((rng.uniform(-10, -4) + (4 if target else 0)) / 20) * background
  level = 0.05 * 10 ** (rng.uniform(-3, 3) / 20)
  return np.clip(level * _unit_rms(x), -1, 1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Clip:
  split: str
  domain: str
  label: str
  number: int
  attrs: Attrs
  anomaly: str | None = None
  strength: float = 0.0


def _clips(seed: int, m: PastMachine, train: int) -> list[_Clip]:
  out = []
  if m.year == 2020:  # per machine id: training clips, then normal and anomalous test clips
    for attrs in m.source:
      out += [_Clip(rec.SPLIT_TRAIN, rec.SOURCE, rec.NORMAL, i, attrs) for i in range(train)]
      out += [_Clip(rec.SPLIT_TEST, rec.SOURCE, rec.NORMAL, i, attrs) for i in range(2)]
      for i in range(2):
        r = _rng(seed, m.name, f"anomaly/{attrs}/{i}")
        out.append(_Clip(rec.SPLIT_TEST, rec.SOURCE, rec.ANOMALY, i, attrs, str(r.choice(m.anomalies)),
                         float(r.uniform(0.3, 1.0))))
    return out
  for domain, count in ((rec.SOURCE, 2 * train - 8), (rec.TARGET, max(3, train // 6))):
    pool = m.source if domain == rec.SOURCE else m.target
    out += [_Clip(rec.SPLIT_TRAIN, domain, rec.NORMAL, i, pool[i % len(pool)]) for i in range(count)]
    out += [_Clip(rec.SPLIT_TEST, domain, rec.NORMAL, i, pool[i % len(pool)]) for i in range(2)]
    for i in range(2):
      r = _rng(seed, m.name, f"anomaly/{domain}/{i}")
      out.append(_Clip(rec.SPLIT_TEST, domain, rec.ANOMALY, i, pool[int(r.integers(len(pool)))],
                       str(r.choice(m.anomalies)), float(r.uniform(0.3, 1.0))))
  return out


def _file_name(m: PastMachine, c: _Clip) -> str:
  if m.year == 2020:
    return f"{c.label}_id_{dict(c.attrs)['id']}_{c.number:08d}.wav"
  return f"section_00_{c.domain}_{c.split}_{c.label}_{c.number:04d}_{filenames.attribute_string(c.attrs)}.wav"


def generate(out_dir: str | pathlib.Path, *, seed: int = 0, machines: Sequence[str] = tuple(MACHINES),
             duration: float = 2.0, train: int = 24) -> dict:
  """Writes the synthetic past years into `out_dir` (absent or empty) -> summary.

  Args:
    out_dir: output folder.
    seed: random seed.
    machines: machine types (names in MACHINES).
    duration: clip length, s.
    train: training clips per 2020 machine id; 2023 types get 2 * train - 8 source and train // 6 (>= 3)
      target training clips (40 and 4 by default).

  Returns:
    {"out_dir", "seed", "duration", "machines": {name: {"layout": "dcase2020" | "dcase2023",
     "clips": {"train": n, "test": n}}}, "records": [ClipRecord, ...] sorted by path}.
  """
  out = pathlib.Path(out_dir)
  unknown = [m for m in machines if m not in MACHINES]
  if unknown:
    raise ValueError(f"unknown machine type(s) {unknown}; known: {sorted(MACHINES)}")
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"{out}: output folder exists and is not empty")
  if duration <= 0:
    raise ValueError(f"duration must be > 0 seconds, got {duration}")
  if train < 6:
    raise ValueError(f"train must be >= 6 clips, got {train}")
  n = int(round(duration * SAMPLE_RATE))
  summary = {"out_dir": str(out), "seed": seed, "duration": duration, "machines": {}}
  written = []
  for name in machines:
    m = MACHINES[name]
    mdir = out / f"dcase{m.year}" / name
    rows, counts = [], {"train": 0, "test": 0}
    for c in _clips(seed, m, train):
      (mdir / c.split).mkdir(parents=True, exist_ok=True)
      file_name = _file_name(m, c)
      path = mdir / c.split / file_name
      identity = f"{c.split}/{c.domain}/{c.label}/{filenames.attribute_string(c.attrs)}/{c.number}"
      wav = synthesize(seed, m, identity, c.attrs, n, c.domain, c.anomaly, c.strength)
      soundfile.write(str(path), wav, SAMPLE_RATE, subtype="PCM_16")
      counts[c.split] += 1
      section = dict(c.attrs)["id"] if m.year == 2020 else "00"
      shown = () if m.year == 2020 else c.attrs
      written.append(rec.ClipRecord(path=str(path), machine=name, section=section, split=c.split,
                                    domain=c.domain, label=c.label, attributes=shown))
      rows.append([f"{name}/{c.split}/{file_name}", *(x for kv in shown for x in kv)])
    if m.year == 2023:
      width = max(len(r) for r in rows) - 1
      with (mdir / "attributes_00.csv").open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file_name"] + [f"d{i // 2 + 1}{'pv'[i % 2]}" for i in range(width)])
        w.writerows(r + [""] * (width + 1 - len(r)) for r in rows)
    summary["machines"][name] = {"layout": f"dcase{m.year}", "clips": counts}
  summary["records"] = sorted(written, key=lambda r: r.path)
  return summary


def format_summary(summary: dict) -> str:
  lines = [f"synthetic past years in {summary['out_dir']} (seed {summary['seed']}, {summary['duration']} s clips "
           f"at {SAMPLE_RATE} Hz)"]
  for name, s in summary["machines"].items():
    lines.append(f"  {s['layout']}/{name}: {s['clips']['train']} train, {s['clips']['test']} test clips")
  total = sum(sum(s["clips"].values()) for s in summary["machines"].values())
  lines.append(f"{total} clips in {len(summary['machines'])} machine types")
  return "\n".join(lines)


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  print(format_summary(generate(f.out, seed=f.seed, machines=f.machines, duration=f.duration, train=f.train)))


def define_flags() -> None:
  """Defines this program's flags; called only when run as a program (see `asd_jax.cli`)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "output folder (absent or empty)", required=True)
  flags.DEFINE_integer("seed", 0, "random seed")
  flags.DEFINE_list("machines", list(MACHINES), "machine types to generate")
  flags.DEFINE_float("duration", 2.0, "clip length in seconds")
  flags.DEFINE_integer("train", 24, "training clips per 2020 machine id (2023 types: 2 * train - 8 source, "
                       "train // 6 target)")


if __name__ == "__main__":
  from asd_jax import cli  # pylint: disable=g-import-not-at-top

  define_flags()
  cli.run(main)  # app.run; bad arguments (unknown machine, a used folder) exit with "error: ..."
