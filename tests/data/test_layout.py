"""Dataset scanning: records, attributes CSV, supplementary folders, all-at-once error reports."""

import pathlib

import numpy as np
import pytest
import soundfile

from asd_jax.data import layout
from asd_jax.data import records as rec


def _touch(root: pathlib.Path, *rel: str, seconds: float = 0.01) -> None:
  """Creates the files; wavs hold `seconds` of silence at 16 kHz (the scan opens every header)."""
  for r in rel:
    p = root / r
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".wav":
      soundfile.write(str(p), np.zeros(int(round(seconds * 16000)), np.int16), 16000, subtype="PCM_16")
    else:
      p.write_bytes(b"")


def _write_csv(path: pathlib.Path, rows: list[str]) -> None:
  path.write_text("file_name,d1p,d1v,d2p,d2v\n" + "\n".join(rows) + "\n")


@pytest.fixture
def dev_root(tmp_path):
  _touch(tmp_path,
         "fan/train/section_00_source_train_normal_0000_m-n_W_spd_1_x.wav",
         "fan/train/section_00_target_train_normal_0000_m-n_X_spd_2.wav",
         "fan/test/section_00_source_test_anomaly_0000_m-n_W_spd_1_x.wav",
         "fan/supplemental/section_00_source_supplemental_noise_0000_noAttribute.wav",
         "bearing/train/section_00_source_train_normal_0000_noAttribute.wav",
         "bearing/test/section_00_target_test_normal_0000_noAttribute.wav",
         "ground_truth_data/ground_truth_fan_section_00_test.csv")
  # The CSV resolves the value "1_x" that contains an underscore.
  _write_csv(tmp_path / "fan/attributes_00.csv", [
      "fan/train/section_00_source_train_normal_0000_m-n_W_spd_1_x.wav,m-n,W,spd,1_x",
      "fan/train/section_00_target_train_normal_0000_m-n_X_spd_2.wav,m-n,X,spd,2",
      "fan/test/section_00_source_test_anomaly_0000_m-n_W_spd_1_x.wav,m-n,W,spd,1_x",
  ])
  _write_csv(tmp_path / "bearing/attributes_00.csv", [
      "bearing/train/section_00_source_train_normal_0000_noAttribute.wav,noAttribute,,,",
      "bearing/test/section_00_target_test_normal_0000_noAttribute.wav,noAttribute,,,",
  ])
  return tmp_path


def test_scan_dataset_records(dev_root):
  records = layout.scan_dataset(dev_root)
  assert [r.path for r in records] == sorted(r.path for r in records)
  assert layout.machines(records) == ["bearing", "fan"]
  by_name = {pathlib.Path(r.path).name: r for r in records}
  r = by_name["section_00_source_train_normal_0000_m-n_W_spd_1_x.wav"]
  assert r == rec.ClipRecord(
      path=str(dev_root / "fan/train/section_00_source_train_normal_0000_m-n_W_spd_1_x.wav"),
      machine="fan", section="00", split="train", domain="source", label="normal",
      attributes=(("m-n", "W"), ("spd", "1_x")))
  noise = by_name["section_00_source_supplemental_noise_0000_noAttribute.wav"]
  assert (noise.split, noise.kind, noise.machine) == ("supplemental", rec.KIND_NOISE, "fan")
  assert by_name["section_00_source_train_normal_0000_noAttribute.wav"].attributes == ()
  assert len(layout.select(records, split="train")) == 3
  assert len(layout.select(records, split="test")) == 2
  assert len(layout.select(records, split="supplemental")) == 1
  assert len(layout.select(records, machine="fan", domain="target")) == 1


def test_scan_one_machine_folder(dev_root):
  records = layout.scan_dataset(dev_root / "bearing")
  assert {r.machine for r in records} == {"bearing"} and len(records) == 2


def test_scan_reports_every_bad_file_at_once(dev_root):
  _touch(dev_root, "fan/train/bad_name.wav", "bearing/test/section_00_source_train_normal_0001_.wav",
         "fan/supplemental/section_00_whatever_0001.wav")
  with pytest.raises(layout.DatasetError) as e:
    layout.scan_dataset(dev_root)
  assert len(e.value.problems) == 3
  text = str(e.value)
  assert "bad_name.wav" in text and "section_00_whatever_0001.wav" in text
  assert "split 'train' but the file is in 'test/'" in text


def test_csv_disagreeing_with_name_is_an_error(dev_root):
  _write_csv(dev_root / "fan/attributes_00.csv", [
      "fan/train/section_00_target_train_normal_0000_m-n_X_spd_2.wav,m-n,Y,spd,2"])
  with pytest.raises(layout.DatasetError, match="disagree"):
    layout.scan_dataset(dev_root)


def test_missing_attributes_csv(dev_root):
  (dev_root / "fan/attributes_00.csv").unlink()
  # Default: fall back to the names (the odd token joins the last value).
  records = layout.scan_dataset(dev_root)
  r = [r for r in records if r.path.endswith("normal_0000_m-n_W_spd_1_x.wav")][0]
  assert r.attributes == (("m-n", "W"), ("spd", "1_x"))
  with pytest.raises(layout.DatasetError, match="no attributes_\\*.csv in .*fan"):
    layout.scan_dataset(dev_root, attributes="require")


def test_malformed_csv_is_reported(dev_root):
  (dev_root / "fan/attributes_00.csv").write_text("name,a,b\nx.wav,1,2\n")
  with pytest.raises(layout.DatasetError, match="attributes_00.csv: unreadable"):
    layout.scan_dataset(dev_root)


def test_not_a_dataset(tmp_path):
  with pytest.raises(layout.DatasetError, match="no machine folder"):
    layout.scan_dataset(tmp_path)
  with pytest.raises(layout.DatasetError, match="not a directory"):
    layout.scan_dataset(tmp_path / "missing")


def test_2020_layout(tmp_path):
  _touch(tmp_path, "fan/train/normal_id_00_00000000.wav", "fan/test/anomaly_id_02_00000005.wav",
         "fan/test/id_01_00000000.wav")
  records = layout.scan_dataset(tmp_path)
  assert [(r.split, r.section, r.label) for r in records] == [
      ("test", "02", "anomaly"), ("test", "01", None), ("train", "00", "normal")]


def test_scan_opens_every_header_and_reports_all_unreadable_files(dev_root):
  (dev_root / "fan/train/section_00_source_train_normal_0000_m-n_W_spd_1_x.wav").write_bytes(b"RIFF0000garbage")
  (dev_root / "bearing/test/section_00_target_test_normal_0000_noAttribute.wav").write_bytes(b"")
  with pytest.raises(layout.DatasetError) as e:
    layout.scan_dataset(dev_root)
  assert len(e.value.problems) == 2
  assert "section_00_source_train_normal_0000_m-n_W_spd_1_x.wav: cannot read as audio" in str(e.value)
  assert "section_00_target_test_normal_0000_noAttribute.wav: cannot read as audio" in str(e.value)
  # Only the names: the damaged files are not opened.
  assert len(layout.scan_dataset(dev_root, audio=False)) == 6


def test_scan_checks_clip_lengths_against_the_clip_seconds(tmp_path, caplog):
  _touch(tmp_path, "fan/train/section_00_source_train_normal_0000_a_1.wav", seconds=1.0)
  _touch(tmp_path, "fan/train/section_00_source_train_normal_0001_a_1.wav", seconds=0.4)  # short: warned
  _touch(tmp_path, "fan/train/section_00_source_train_normal_0002_a_1.wav",
         "fan/test/section_00_source_test_normal_0000_a_1.wav", seconds=0.05)  # too short: errors
  with pytest.raises(layout.DatasetError) as e, caplog.at_level("WARNING"):
    layout.scan_dataset(tmp_path, clip_seconds=1.0)
  assert len(e.value.problems) == 2
  assert all("0.05 s long, less than 0.1 of the 1 s clip length" in p for p in e.value.problems)
  assert {p.split(":")[0] for p in e.value.problems} == {
      str(tmp_path / "fan/train/section_00_source_train_normal_0002_a_1.wav"),
      str(tmp_path / "fan/test/section_00_source_test_normal_0000_a_1.wav")}
  warned = "\n".join(r.getMessage() for r in caplog.records)
  assert "1 clip(s)" in warned and "normal_0001_a_1.wav: 0.4 s long" in warned and "normal_0000_a_1" not in warned
  # Without a clip length, or with a shorter one, the same files are fine.
  assert len(layout.scan_dataset(tmp_path)) == 4
  assert len(layout.scan_dataset(tmp_path, clip_seconds=0.1)) == 4


def test_machine_folder_without_training_clips_is_reported_up_front(dev_root):
  for wav in (dev_root / "bearing/train").glob("*.wav"):
    wav.unlink()
  (dev_root / "valve/train").mkdir(parents=True)  # an empty machine folder: no clips at all
  assert {r.machine for r in layout.scan_dataset(dev_root)} == {"bearing", "fan"}  # silently partial
  with pytest.raises(layout.DatasetError) as e:
    layout.scan_dataset(dev_root, require_train=True)
  assert [p.split(":")[0] for p in e.value.problems] == [str(dev_root / "bearing"), str(dev_root / "valve")]
  assert "no training clips" in e.value.problems[0]


def test_scan_reports_files_the_channel_policy_cannot_read(tmp_path):
  """Mono clips under a two-channel policy, and an 8-channel one: every such file is named, with its count."""
  _touch(tmp_path, "fan/train/section_00_source_train_normal_0000_spd_1.wav",
         "fan/test/section_00_source_test_normal_0000_spd_1.wav")
  stereo = tmp_path / "fan/train/section_00_source_train_normal_0001_spd_1.wav"
  soundfile.write(str(stereo), np.zeros((160, 2), np.int16), 16000, subtype="PCM_16")
  array = tmp_path / "fan/train/section_00_source_train_normal_0002_spd_1.wav"
  soundfile.write(str(array), np.zeros((160, 8), np.int16), 16000, subtype="PCM_16")
  assert len(layout.scan_dataset(tmp_path, channels="near")) == 4
  assert len(layout.scan_dataset(tmp_path, channels="mean")) == 4
  with pytest.raises(layout.DatasetError) as error:
    layout.scan_dataset(tmp_path, channels="cancel")
  assert error.value.problems == [
      f"{tmp_path}/fan/test/section_00_source_test_normal_0000_spd_1.wav: 1 channel(s), but channel policy "
      "'cancel' needs exactly 2 (channel 0 near the machine, channel 1 far); use 'near' or 'mean' for mono data",
      f"{tmp_path}/fan/train/section_00_source_train_normal_0000_spd_1.wav: 1 channel(s), but channel policy "
      "'cancel' needs exactly 2 (channel 0 near the machine, channel 1 far); use 'near' or 'mean' for mono data",
      f"{tmp_path}/fan/train/section_00_source_train_normal_0002_spd_1.wav: 8 channel(s), but channel policy "
      "'cancel' needs exactly 2 (channel 0 near the machine, channel 1 far); use 'near' or 'mean' for such data"]
  with pytest.raises(ValueError, match="unknown channel policy 'left'"):
    layout.scan_dataset(tmp_path, channels="left")
