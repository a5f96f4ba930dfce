"""The training data: train clips plus the supplementary clean-machine and noise-only clips, each its own class."""

import collections

import jax
import numpy as np
import pytest
import soundfile

from asd_jax.audio import wav
from asd_jax.data import records as rec
from asd_jax.data import synth
from asd_jax.finetuning import fine_tune
from asd_jax.models import networks
from configs import common

MACHINES = ["ToyCar", "fan"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """A tiny synthetic DCASE 2025 dev set (two machine types, 0.25 s clips) and its generator summary."""
  root = tmp_path_factory.mktemp("synth")
  return synth.generate(root, scale=0.01, seed=0, machines=MACHINES, duration=0.25)


def _config(summary, batch_size=1):
  config = common.get_config()
  config.data.root = summary["out_dir"]
  config.data.clip_seconds = 0.25
  config.model.preset = "tiny"
  config.train.batch_size = batch_size
  return config


def test_label_space_has_the_train_and_supplementary_classes(dataset):
  space = fine_tune.label_space(_config(dataset))
  want = sorted(name for m in dataset["machines"].values() for name in m["classes"])
  assert space.names == want
  for machine in MACHINES:  # the generator's own list of classes has both supplementary kinds per machine
    assert {f"{machine}/clean", f"{machine}/noise"} <= set(want)
  # The ArcFace head has one column per class of that space.
  config = _config(dataset)
  network = networks.build_network(config, space.num_classes)
  tree, _ = fine_tune.init_trainable(config, network, jax.random.key(0), abstract=True)
  assert tree["model"]["head"]["kernel"].shape[-1] == len(want)


def test_training_batches_include_the_supplementary_clips_with_their_own_labels(dataset):
  config = _config(dataset)
  space = fine_tune.label_space(config)
  clips = fine_tune.training_records(fine_tune.records(config), config)
  by_split = collections.Counter(r.split for r in clips)
  written = collections.Counter(r.split for r in dataset["records"])
  assert by_split == {rec.SPLIT_TRAIN: written[rec.SPLIT_TRAIN],
                      rec.SPLIT_SUPPLEMENTAL: written[rec.SPLIT_SUPPLEMENTAL]}
  batches, num_clips = fine_tune.train_batches(config, space)
  assert num_clips == len(clips)
  # Batch size 1: the first epoch is a permutation of every training clip.
  epoch = [next(batches) for _ in range(num_clips)]
  index = np.concatenate([b["index"] for b in epoch])
  assert sorted(index.tolist()) == list(range(num_clips))
  labels = dict(zip(index.tolist(), np.concatenate([b["label"] for b in epoch]).tolist()))
  seen_supplementary = collections.Counter()
  for i, clip in enumerate(clips):
    name = space.names[labels[i]]
    if clip.split == rec.SPLIT_SUPPLEMENTAL:
      assert name == f"{clip.machine}/{clip.kind}", clip.path
      seen_supplementary[name] += 1
    else:
      assert name.split("/")[1] not in (rec.KIND_CLEAN, rec.KIND_NOISE), clip.path
  count = dataset["counts"]["supplemental"]
  assert seen_supplementary == {f"{m}/{kind}": count for m in MACHINES for kind in (rec.KIND_CLEAN, rec.KIND_NOISE)}


@pytest.mark.parametrize("strict", [False, True])
def test_data_strict_refuses_a_wav_at_another_rate(strict, tmp_path):
  summary = synth.generate(tmp_path / "data", scale=0.01, seed=0, machines=["fan"], duration=0.25)
  odd = next(r.path for r in summary["records"] if r.split == rec.SPLIT_TRAIN)
  soundfile.write(odd, np.zeros(2000, np.float32), 8000)  # 0.25 s at 8 kHz
  config = _config(summary, batch_size=1)
  config.data.strict = strict
  space = fine_tune.label_space(config)
  batches, num_clips = fine_tune.train_batches(config, space)
  if strict:
    with pytest.raises(wav.WavError, match=f"{odd}: sample rate 8000 Hz, expected 16000 Hz"):
      for _ in range(num_clips):
        next(batches)
  else:  # resampled to the 4000 samples of 0.25 s at 16 kHz
    assert {next(batches)["wav"].shape for _ in range(num_clips)} == {(1, 4000)}


def test_the_scan_checks_the_channel_policy_before_training(dataset):
  """The synthetic 2025 set is mono: `data.channels=cancel` is refused by the scan, naming clips, before any batch."""
  from asd_jax.data import layout  # pylint: disable=import-outside-toplevel
  config = _config(dataset)
  config.data.channels = "cancel"
  with pytest.raises(layout.DatasetError, match=r"\.wav: 1 channel\(s\), but channel policy 'cancel' needs exactly 2"):
    fine_tune.records(config, training=True)
  config.data.channels = "near"
  assert fine_tune.records(config, training=True)


def test_a_batch_larger_than_the_training_clips_names_the_field_and_the_dataset(dataset, tmp_path):
  """Issue 26.5: was `shard has 92 records, fewer than batch_size 1000`, naming neither the dataset nor the field;
  refused before any compute (no workdir content but its lock and the clip hashes)."""
  clips = fine_tune.training_records(fine_tune.records(_config(dataset), training=True), _config(dataset))
  config = _config(dataset, batch_size=len(clips) + 1)
  with pytest.raises(ValueError) as error:
    fine_tune.train(config, str(tmp_path / "work"), progress=False)
  assert str(error.value) == (
      f"config.train.batch_size={len(clips) + 1} is more than the {len(clips)} training clips (train/ and "
      f"supplemental/) under {dataset['out_dir']}: lower config.train.batch_size to at most {len(clips)}")
  # No run state: the lock and the clips' hash cache (which a resume's clip check reads, issue 26.2), nothing else.
  assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [".lock", "clip_hashes.json"]


def test_supplemental_false_trains_on_the_train_clips_only_without_their_classes(dataset):
  config = _config(dataset)
  config.data.supplemental = False
  clips = fine_tune.training_records(fine_tune.records(config), config)
  want = [r for r in dataset["records"] if r.split == "train"]
  assert sorted(r.path for r in clips) == sorted(r.path for r in want)
  names = fine_tune.label_space(config).names
  assert not [n for n in names if n.endswith(("/clean", "/noise"))]
  assert set(names) == {n for m in dataset["machines"].values() for n in m["classes"]
                        if not n.endswith(("/clean", "/noise"))}
