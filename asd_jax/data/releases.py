"""What the DCASE Task 2 releases of 2023-2026 hold: machine types per set, sections, channels, clip lengths.

Machine types as the official baseline lists them (nttcslab/dcase2023_task2_baseline_ae,
`datasets/machine_type_<year>_{dev,eval}.yaml`); the evaluation set's types are those of the additional training
set. From 2023 on every machine type has one section, 00. The 2026 facts (the baseline's README and download
scripts, and the real file lists; BUILD.md has the download and layout):

  * two channels, 16 kHz, PCM16: channel 0 a microphone near the machine, channel 1 a far one
    (`asd_jax.audio.channels`); 2020-2025 are mono;
  * dev clips of 10 s (the MIMII-derived types), 11 s (ToyCar) and 12 s (ToyCarEmu); evaluation clips of 6, 10
    or 16 s;
  * 990 source + 10 target training clips per type, 50 test clips per domain and label, no `supplemental/`;
  * names: see `asd_jax.data.filenames` (the repeated key `mic` of `..._car_B1_spd_2_mic_2_mic_1.wav`,
    gearboxEmu's test clips that mix `pro_Y` and `pro_y`, ToyCar and ToyCarEmu test clips numbered 0000-0199
    across the four categories, evaluation test clips `section_00_0000.wav`).

`baseline_prefix(year)` is the dataset tag the baseline puts in its score file names
(`anomaly_score_DCASE2026T2<machine>_section_00_test_seed<seed><tag>_Eval.csv`), which the official evaluators
accept besides the plain `anomaly_score_<machine>_section_00_test.csv` (`asd_jax.evaluation.files`).
"""

from __future__ import annotations

DEV, EVAL = "dev", "eval"

MACHINES: dict[int, dict[str, tuple[str, ...]]] = {
    2023: {DEV: ("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve"),
           EVAL: ("ToyDrone", "ToyNscale", "ToyTank", "Vacuum", "bandsaw", "grinder", "shaker")},
    2024: {DEV: ("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve"),
           EVAL: ("3DPrinter", "AirCompressor", "BrushlessMotor", "HairDryer", "HoveringDrone", "RoboticArm",
                  "Scanner", "ToothBrush", "ToyCircuit")},
    2025: {DEV: ("ToyCar", "ToyTrain", "bearing", "fan", "gearbox", "slider", "valve"),
           EVAL: ("AutoTrash", "BandSealer", "CoffeeGrinder", "HomeCamera", "Polisher", "ScrewFeeder", "ToyPet",
                  "ToyRCCar")},
    2026: {DEV: ("ToyCar", "ToyCarEmu", "bearingEmu", "fan", "gearboxEmu", "sliderEmu", "valveEmu"),
           EVAL: ("BlowerDustCollector", "Sander", "SewingMachine", "ToothBrush", "ToyDrone")},
}
SECTIONS = ("00",)  # 2023-2026: one section per machine type
CHANNELS = {2023: 1, 2024: 1, 2025: 1, 2026: 2}
# Clip lengths in seconds of the 2026 release (the report reads 10 s clips; see configs/common.py).
CLIP_SECONDS_2026 = {DEV: {"ToyCar": 11.0, "ToyCarEmu": 12.0, "bearingEmu": 10.0, "fan": 10.0, "gearboxEmu": 10.0,
                           "sliderEmu": 10.0, "valveEmu": 10.0},
                     EVAL: (6.0, 10.0, 16.0)}


def machines(year: int, split: str) -> tuple[str, ...]:
  """The machine types of `year`'s `split` ("dev" or "eval"); KeyError naming the known years and splits."""
  if year not in MACHINES:
    raise KeyError(f"no machine list for DCASE {year}; known: {sorted(MACHINES)}")
  if split not in (DEV, EVAL):
    raise KeyError(f"split must be {DEV!r} or {EVAL!r}, got {split!r}")
  return MACHINES[year][split]


def baseline_prefix(year: int) -> str:
  """`DCASE<year>T2`: the dataset tag in the official baseline's file names."""
  return f"DCASE{int(year)}T2"

