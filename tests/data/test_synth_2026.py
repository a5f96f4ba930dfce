"""Synthetic DCASE 2026 data: layout, names and quirks, channel count and lengths, the recording geometry."""

import csv
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from asd_jax.audio import channels
from asd_jax.audio import wav as wavlib
from asd_jax.data import filenames, layout, releases, synth_2026

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
  root = tmp_path_factory.mktemp("synth2026") / "dev"
  summary = synth_2026.generate(root, scale=0.005, seed=3, duration=0.25, test_clips=3)
  return root, summary


def test_scan_gives_back_the_written_records_with_two_channels(made):
  root, summary = made
  assert layout.scan_dataset(root, attributes="require", channels="cancel", require_train=True) == summary["records"]
  assert layout.machines(summary["records"]) == sorted(releases.machines(2026, "dev"))
  assert not any((root / m / "supplemental").exists() for m in releases.machines(2026, "dev"))


def test_counts_lengths_and_format(made):
  root, summary = made
  for machine in releases.machines(2026, "dev"):
    records = layout.select(summary["records"], machine=machine)
    assert len(layout.select(records, split="train", domain="source")) == 5
    assert len(layout.select(records, split="train", domain="target")) == 3
    for domain in ("source", "target"):
      for label in ("normal", "anomaly"):
        assert len(layout.select(records, split="test", domain=domain, label=label)) == 3
    info = soundfile.info(records[0].path)
    expected = round(0.25 * {"ToyCar": 1.1, "ToyCarEmu": 1.2}.get(machine, 1.0) * 16000)
    assert (info.channels, info.samplerate, info.subtype, info.frames) == (2, 16000, "PCM_16", expected)


def test_names_follow_the_real_quirks(made):
  root, summary = made
  names = {m: [pathlib.Path(r.path).name for r in layout.select(summary["records"], machine=m)]
           for m in releases.machines(2026, "dev")}
  assert all(n.endswith("_mic_2_mic_1.wav") for n in names["ToyCarEmu"])
  for machine in ("ToyCar", "bearingEmu", "sliderEmu", "valveEmu"):
    assert all(n.endswith("_noAttribute.wav") for n in names[machine])
  assert {r.attributes for r in layout.select(summary["records"], machine="fan")} <= {
      (("spd", s),) for s in "123"}
  gear = layout.select(summary["records"], machine="gearboxEmu", split="test", domain="target")
  for r in gear:  # target normal clips of pro_Y are written pro_y, as in the real test set
    value = dict(r.attributes)["pro"]
    assert value != ("Y" if r.label == "normal" else "y")
  rows = list(csv.reader((root / "ToyCarEmu" / "attributes_00.csv").open()))
  assert rows[0] == ["file_name", "d1p", "d1v", "d2p", "d2v", "d3p", "d3v", "d4p", "d4v"]
  assert [rows[1][i] for i in (1, 3, 5, 6, 7, 8)] == ["car", "spd", "mic", "2", "mic", "1"]
  for machine in ("ToyCar", "ToyCarEmu", "fan"):
    numbers = sorted(int(filenames.parse_name(pathlib.Path(r.path).name).number)
                     for r in layout.select(summary["records"], machine=machine, split="test"))
    if machine in ("ToyCar", "ToyCarEmu"):
      assert numbers == list(range(12))  # 0000-0011 across the four categories
    else:
      assert numbers == sorted(list(range(3)) * 4)  # 0000-0002 in each category


def test_ground_truth_and_eval_style_copies(made):
  root, summary = made
  tests = layout.select(summary["records"], machine="fan", split="test")
  rows = list(csv.reader((root / "ground_truth_data" / "ground_truth_fan_section_00_test.csv").open()))
  assert len(rows) == len(tests) == 12
  hidden = layout.scan_dataset(root / "eval_style" / "fan", channels="cancel")
  assert all(r.label is None and r.domain is None for r in hidden) and len(hidden) == 12


def test_the_machine_reaches_the_far_microphone_weaker_and_later():
  for machine in releases.machines(2026, "dev"):
    p = synth_2026.hall_paths(0, machine)
    gain_db = 20 * np.log10(np.max(np.abs(p.machine_far)))
    delay_s = np.argmax(np.abs(p.machine_far)) / 16000
    assert -26 <= gain_db <= -16 and 0.007 <= delay_s <= 0.028
    near_s, far_s = (np.argmax(np.abs(h)) / 16000 for h in (p.noise_near, p.noise_far))
    assert abs(far_s - near_s) <= delay_s + 1 / 16000  # the noise's path difference is at most the separation
    assert np.sum(p.noise_near**2) == pytest.approx(1.0)
    assert 0 <= 10 * np.log10(np.sum(p.noise_far**2)) <= 6 + 3  # 0-6 dB, +-reflections


def test_the_far_channel_carries_the_noise_the_near_one_does():
  """fan's background is at noise_db = -4 +- 2 dB under its machine, 20-39 % of the near channel's energy, and
  reaches the far microphone through fixed paths: cancellation, which removes only what the far channel predicts,
  must take at least that 20 % out. The far channel is no scaled copy of the near one (delays: low correlation)."""
  spec = synth_2026.MACHINES["fan"]
  pair = synth_2026.synthesize_pair(0, spec, "x", "source", (("spd", "1"),), 32000, synth_2026.hall_paths(0, "fan"))
  near, far = pair[:, 0].astype(np.float64), pair[:, 1].astype(np.float64)
  y = channels.cancel(near, far).astype(np.float64)
  assert np.sum(y**2) < 0.8 * np.sum(near**2)
  assert abs(np.corrcoef(near, far)[0, 1]) < 0.9


def test_reproducible_per_clip(made, tmp_path):
  _, summary = made
  again = synth_2026.generate(tmp_path / "again", scale=0.005, seed=3, duration=0.25, test_clips=3,
                              machines=["gearboxEmu"])
  mine = {pathlib.Path(r.path).name: r for r in layout.select(summary["records"], machine="gearboxEmu")}
  for r in again["records"][:4]:
    a = wavlib.read_channels(r.path)
    np.testing.assert_array_equal(a, wavlib.read_channels(mine[pathlib.Path(r.path).name].path))


def test_cli_year_2026(tmp_path):
  out = tmp_path / "cli"
  proc = subprocess.run([sys.executable, "-m", "asd_jax.data.synth", "--year=2026", f"--out={out}", "--scale=0.003",
                         "--duration=0.2", "--machines=valveEmu", "--test_clips=1"], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "synthetic DCASE 2026 dev set" in proc.stdout
  records = layout.scan_dataset(out, channels="cancel")
  assert {r.machine for r in records} == {"valveEmu"}
  assert soundfile.info(records[0].path).channels == 2


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="unknown 2026 machine type"):
    synth_2026.generate(tmp_path / "x", machines=["bearing"])
  (tmp_path / "used").mkdir()
  (tmp_path / "used" / "f").write_text("")
  with pytest.raises(FileExistsError):
    synth_2026.generate(tmp_path / "used")
