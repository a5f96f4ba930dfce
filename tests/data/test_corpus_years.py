"""The report's corpus config (configs/pretrain_corpus.py) on tiny fake trees in each year's DCASE layout + AudioSet.

Each fake tree holds the file names of that year's development and evaluation sets (the evaluation set's
"additional training" clips in `train/`, hidden-label clips in `test/`, or in 2021 `source_test/` and
`target_test/`), unpacked the way the baselines unpack them, with 0.2 s clips. The test checks which
clips the config takes: every training (and 2025 supplementary) clip, no test clip of any year, AudioSet's
wav and flac files at any depth.
"""

import pathlib

import numpy as np
import pytest
import soundfile
from absl import flags
from grain.sharding import ShardOptions
from ml_collections import config_flags

from asd_jax.data import corpus
from asd_jax.data import corpus_sources as cs
from asd_jax.data import shards

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
RATE = 16000

# year -> {folder below the year root: [file names]}; "train" files are wanted, "test" files excluded.
TREES = {
    2020: {
        "dev_data/fan/train": ["normal_id_00_00000000.wav", "normal_id_02_00000001.wav"],
        "dev_data/fan/test": ["normal_id_00_00000000.wav", "anomaly_id_02_00000000.wav"],
        "dev_data/ToyConveyor/train": ["normal_id_01_00000000.wav"],
        "eval_data/fan/train": ["normal_id_01_00000000.wav"],
        "eval_data/fan/test": ["id_01_00000000.wav", "id_03_00000001.wav"],
    },
    2021: {
        "dev_data/gearbox/train": ["section_00_source_train_normal_0000_volt_1.0.wav",
                                   "section_01_target_train_normal_0000_volt_1.5.wav"],
        "dev_data/gearbox/source_test": ["section_00_source_test_normal_0000.wav"],  # 2021: no test/ folder
        "dev_data/gearbox/target_test": ["section_01_target_test_anomaly_0000.wav"],
        "dev_data/pump/train": ["section_02_source_train_normal_0004_strength_1_ambient.wav"],
        "eval_data/gearbox/train": ["section_03_source_train_normal_0000_volt_2.0.wav"],
        "eval_data/gearbox/source_test": ["section_03_source_test_0000.wav"],
        "eval_data/gearbox/target_test": ["section_04_target_test_0001.wav"],
        "eval_data/ToyTrain/target_test": ["section_05_target_test_0000.wav"],  # an evaluation set alone
    },
    2022: {
        "dev/bearing/train": ["section_00_source_train_normal_0000_vel_6_loc_A.wav",
                              "section_00_target_train_normal_0000_vel_10_loc_B.wav"],
        "dev/bearing/test": ["section_00_source_test_anomaly_0000_vel_6_loc_A.wav"],
        "eval/bearing/train": ["section_03_source_train_normal_0000_vel_8_loc_C.wav"],
        "eval/bearing/test": ["section_03_0000.wav"],
    },
    2023: {
        "dev_data/raw/ToyCar/train": ["section_00_source_train_normal_0000_car_A1_spd_28V_mic_1.wav"],
        "dev_data/raw/ToyCar/test": ["section_00_target_test_anomaly_0001_car_B2_spd_31V_mic_1.wav"],
        "eval_data/raw/ToyDrone/train": ["section_00_source_train_normal_0000_spd_1.wav",
                                         "section_00_target_train_normal_0000_noAttribute.wav"],
        "eval_data/raw/ToyDrone/test": ["section_00_0000.wav", "section_00_0001.wav"],
    },
    2024: {
        "dev_data/raw/valve/train": ["section_00_source_train_normal_0000_v1pat_00_v2pat_none.wav"],
        "dev_data/raw/valve/test": ["section_00_source_test_normal_0000_v1pat_00_v2pat_none.wav"],
        "eval_data/raw/3DPrinter/train": ["section_00_source_train_normal_0000_noAttribute.wav"],
        "eval_data/raw/3DPrinter/test": ["section_00_test_0000.wav"],
    },
    2025: {
        "dev/slider/train": ["section_00_source_train_normal_0000_noAttribute.wav"],
        "dev/slider/test": ["section_00_source_test_anomaly_0000_noAttribute.wav"],
        "dev/slider/supplemental": ["section_00_machine_0001_.wav", "section_00_noise_0001_.wav"],
        "eval/AutoTrash/train": ["section_00_source_train_normal_0000_noAttribute.wav"],
        "eval/AutoTrash/test": ["section_00_0000.wav"],
    },
}
AUDIOSET = {
    "balanced_train_segments": ["YAbc_30.000_40.000.flac", "YDef_0.000_10.000.wav"],
    "unbalanced_train_segments": ["part00/YGhi_10.000_20.000.flac", "part01/sub/YJkl_5.000_15.000.wav"],
}


def _clip(path: pathlib.Path, seed: int) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  if path.suffix == ".flac":  # AudioSet downloads: 44.1 kHz stereo
    soundfile.write(str(path), rng.uniform(-0.3, 0.3, (8820, 2)).astype(np.float32), 44100)
  else:
    soundfile.write(str(path), rng.uniform(-0.3, 0.3, 3200).astype(np.float32), RATE, subtype="PCM_16")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
  base = tmp_path_factory.mktemp("years")
  seed = 0
  for year, tree in TREES.items():
    for folder, names in tree.items():
      for name in names:
        _clip(base / f"dcase{year}" / folder / name, seed := seed + 1)
  for folder, names in AUDIOSET.items():
    for name in names:
      _clip(base / "audioset" / folder / name, seed := seed + 1)
  (base / "audioset" / "balanced_train_segments" / "README.txt").write_text("not audio")
  return base


def _wanted(base, year):
  return sorted(str(base / f"dcase{year}" / folder / name) for folder, names in TREES[year].items()
                for name in names if not folder.endswith("test"))


def _load_config(*overrides):
  argv = ["prog", f"--config={REPO_ROOT / 'configs' / 'pretrain_corpus.py'}", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def _overrides(base):
  out = [f"--config.sources.dcase{year}.path={base / f'dcase{year}'}" for year in range(2020, 2025)]
  return out + [f"--config.sources.audioset_balanced.path={base / 'audioset' / 'balanced_train_segments'}",
                f"--config.sources.audioset_unbalanced.path={base / 'audioset' / 'unbalanced_train_segments'}"]


@pytest.mark.parametrize("year", sorted(TREES))
def test_each_years_layout_gives_its_training_clips_only(roots, year):
  files = cs.list_source(cs.SourceSpec(f"dcase{year}", str(roots / f"dcase{year}"), "dcase"))
  assert list(files.paths) == _wanted(roots, year)
  tests = sum(len(names) for folder, names in TREES[year].items() if folder.endswith("test"))
  assert files.excluded == {"test": tests}


def test_report_corpus_config_on_the_fake_years_and_audioset(roots):
  config = _load_config(*_overrides(roots))
  assert config.is_locked and config.clip_seconds == 10.0 and not config.include_test
  listed = cs.list_sources(cs.source_specs(config))
  by_name = {f.spec.name: f for f in listed}
  assert sorted(by_name) == ["audioset_balanced", "audioset_unbalanced", *(f"dcase{y}" for y in range(2020, 2025))]
  for year in range(2020, 2025):
    assert list(by_name[f"dcase{year}"].paths) == _wanted(roots, year)
  assert [pathlib.Path(p).name for p in by_name["audioset_unbalanced"].paths] == [
      "YGhi_10.000_20.000.flac", "YJkl_5.000_15.000.wav"]
  assert len(by_name["audioset_balanced"].paths) == 2  # README.txt is not audio
  assert not any("test/" in p for f in listed for p in f.paths)
  # Reading: 10 s rows; every clip is shorter, so zero-padded with its real length in valid_samples.
  it, num_clips = corpus.pretraining_batches(config, batch_size=4, seed=0, shard=ShardOptions(0, 1))
  assert num_clips == sum(len(_wanted(roots, y)) for y in range(2020, 2025)) + 4
  batch = next(it)
  assert batch["wav"].shape == (4, 160000)
  assert set(batch["valid_samples"]) <= {3200}  # 0.2 s at 16 kHz, also after resampling 44.1 kHz
  assert not batch["wav"][:, 3200:].any()


def test_include_test_override_takes_every_years_test_clips(roots):
  config = _load_config(*_overrides(roots), "--config.include_test=True")
  listed = cs.list_sources(cs.source_specs(config))
  total_tests = sum(len(n) for y in range(2020, 2025) for f, n in TREES[y].items() if f.endswith("test"))
  assert sum("test/" in p for f in listed for p in f.paths) == total_tests


def test_the_fake_years_pack_and_read_back(roots, tmp_path):
  config = _load_config(*_overrides(roots))
  manifest = shards.pack(config, tmp_path / "packed", clips_per_shard=3, progress=False)
  assert manifest["complete"] and manifest["totals"]["rejected"] == 0
  assert {s["name"]: s["clips"] for s in manifest["sources"]} == {
      "audioset_balanced": 2, "audioset_unbalanced": 2,
      **{f"dcase{y}": len(_wanted(roots, y)) for y in range(2020, 2025)}}
  assert manifest["sources"][-1]["excluded"] == {"test": 2}  # dcase2024
  packed = _load_config(f"--config.packed={tmp_path / 'packed'}")  # sources come from the manifest
  it, num_clips = corpus.pretraining_batches(packed, batch_size=2, seed=0, shard=ShardOptions(0, 1))
  assert num_clips == manifest["totals"]["clips"] and next(it)["wav"].shape == (2, 160000)
