"""DCASE 2026 two-channel data through the pipeline, `detect` and the evaluator, with every channel policy.

A tiny synthetic 2026 dev set (`asd_jax.data.synth_2026`): fan and ToyCarEmu (its name quirks: the repeated `mic`
key, test clips numbered across the four categories, clips 1.2 times as long), near/far pairs, 1 s clips (1.2 s
for ToyCarEmu). The model is `configs/demo_2026.py`'s non-learned log-mel row (no training: cheap), made the one
model of a one-model system so that the pipeline exports it; `--config.data.channels` sets its policy.

Per policy, the checks are independent computations: the pipeline's embeddings equal those of waveforms read here
with soundfile and put through the policy by hand (channel 0, channel 1, their float32 mean, or
`channels.cancel` of the pair), embedded by the detector's forward pass (the same compiled function: bit for
bit); the submission files evaluate, from the dataset's names and from its ground-truth files, to the pipeline's
official score; the detector reads the test clips as the pipeline read them and scores them as the pipeline did.
Score tolerance, as in tests/test_pipeline.py: from equal embeddings, a cosine distance of D float64 terms in
another summation order moves by at most 2 gamma_D (gamma_D = D u / (1 - D u), u = 2^-53), a normalised score by
that over the section's std (a one-model system of weight 1: the fused score is the normalised one).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import soundfile
from absl import flags
from ml_collections import config_flags

from asd_jax import pipeline
from asd_jax.audio import channels as channels_lib
from asd_jax.data import synth_2026
from asd_jax.detector import detect
from asd_jax.detector import detector as detector_lib
from asd_jax.embedding import store
from asd_jax.evaluation import official
from asd_jax.pipeline import specs as specs_lib
from asd_jax.pipeline import stages
from configs import demo_2026
from configs import demo_pipeline

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
U64 = 2.0**-53
CLIP_S = 1.0
MACHINES = ("fan", "ToyCarEmu")


def _config(root, policy: str) -> ml_collections.ConfigDict:
  c = demo_2026.get_config()
  c.data.root = str(root)
  c.data.channels = policy
  c.pretrain = None
  c.model_keys = "log_mel"
  c.system_models = [c.models.log_mel.name]
  c.systems = ml_collections.ConfigDict({"logmel": [1.0]})
  c.system = "logmel"
  c.models.log_mel.frozen.data.clip_seconds = CLIP_S
  c.models.log_mel.frozen.embed.batch_size = 8
  return c


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline_2026") / "data"
  synth_2026.generate(root, scale=0.01, seed=0, machines=MACHINES, duration=CLIP_S, target_train=3, test_clips=3)
  return root


@pytest.fixture(scope="module")
def dev_view(dataset, tmp_path_factory):
  """The dataset's machine folders alone (links): `synth_2026` also writes evaluation-style copies of the test
  clips under `eval_style/`, which `evaluate --dataset` would read as more clips of the same sections."""
  view = tmp_path_factory.mktemp("dev_view")
  for machine in MACHINES:
    (view / machine).symlink_to(dataset / machine, target_is_directory=True)
  return view


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
  """{policy: (workdir, PipelineResult)} for every policy."""
  out = {}
  for policy in channels_lib.POLICIES:
    workdir = tmp_path_factory.mktemp(f"run_{policy}")
    out[policy] = workdir, pipeline.run(_config(dataset, policy), str(workdir), progress=False)
  return out


def _by_hand(path: str, policy: str) -> np.ndarray:
  """float32 [clip samples]: the first clip length of `path`, turned into one waveform by `policy`."""
  x = soundfile.read(path, dtype="float32", always_2d=True)[0].T[:, :int(CLIP_S * 16_000)]
  assert x.shape[0] == 2
  if policy == channels_lib.CANCEL:
    return channels_lib.cancel(x[0], x[1])
  return {channels_lib.NEAR: x[0], channels_lib.FAR: x[1], channels_lib.MEAN: x.mean(axis=0)}[policy]


def _bound(result, record, score):
  state = result.models["log_mel"].scorer.sections[(record.machine, record.section)]
  d = state.bank.shape[1]
  return 2 * (d * U64 / (1 - d * U64)) / state.std + 4 * U64 * abs(score)


@pytest.mark.parametrize("policy", channels_lib.POLICIES)
def test_every_policy_runs_through_the_pipeline_the_evaluator_and_detect(runs, dataset, dev_view, policy):
  workdir, result = runs[policy]
  spec = result.models["log_mel"].spec
  assert spec.channels == policy and spec.config.data.channels == policy
  assert f"channel policy (data.channels): {policy}" in result.tables
  records = result.train_records + result.test_records
  assert {r.machine for r in records} == set(MACHINES)

  # The pipeline read every clip with the policy: its embeddings are those of the waveforms read by hand.
  det = detector_lib.Detector(result.detector_dir)
  stored = store.read(os.path.join(workdir, "models", "log_mel", store.ARRAYS), records)
  by_hand = det.waveform_embeddings(np.stack([_by_hand(r.path, policy) for r in records]))["log_mel"]
  for name, value in by_hand.items():
    np.testing.assert_array_equal(value, stored[name], err_msg=name)

  # The submission (DCASE 2022+ names) evaluates as the pipeline evaluated it.
  system = result.systems["logmel"]
  assert sorted(os.listdir(system.submission_dir)) == sorted(
      f"{kind}_{m}_section_00_test.csv" for kind in ("anomaly_score", "decision_result") for m in MACHINES)
  for evaluation in (official.evaluate_dataset(system.submission_dir, str(dev_view)),
                     official.evaluate_dirs(system.submission_dir, str(dataset))):
    assert evaluation.official_score == pytest.approx(system.evaluation.official_score, abs=1e-12)

  # The detector records the policy and the training clips' format, and scores the test clips as the pipeline.
  assert det.manifest[detector_lib.INPUT] == {
      "channel_policy": policy, "sample_rate": 16_000, "clip_seconds": CLIP_S,
      "training_clips": {"channel_counts": {"2": len(result.train_records)},
                         "sample_rates": {"16000": len(result.train_records)},
                         "sample_formats": {"PCM_16": len(result.train_records)}}}
  detections = detect.detect(det, [str(dataset / m / "test") for m in MACHINES])
  by_path = {r.path: (r, s) for r, s in zip(result.test_records, system.fused.scores)}
  assert sorted(d.path for d in detections) == sorted(by_path)
  for d in detections:
    record, score = by_path[d.path]
    assert (d.machine, d.section, d.warning) == (record.machine, "00", "")
    assert len(d.windows) == 1  # ToyCarEmu's 1.2 s: one 1 s window, the 0.2 s tail dropped
    assert abs(d.score - score) <= _bound(result, record, score)


def test_the_evaluator_cli_scores_the_pipeline_s_2026_submission(runs, dev_view, tmp_path):
  _, result = runs[channels_lib.CANCEL]
  system = result.systems["logmel"]
  out = tmp_path / "result.json"
  proc = subprocess.run([sys.executable, "-m", "asd_jax.evaluate", f"--scores={system.submission_dir}",
                         f"--dataset={dev_view}", f"--json={out}"], cwd=REPO_ROOT, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  assert proc.returncode == 0, proc.stderr
  assert json.loads(out.read_text())["official_score"] == pytest.approx(system.evaluation.official_score, abs=1e-12)


def test_cancellation_beats_the_near_channel_on_the_tiny_set(runs):
  """Not a benchmark (3 test clips per domain and label): a sanity check that the policies differ as the far
  channel's noise says they should; BENCHMARKS.md has the measurement."""
  score = {p: runs[p][1].systems["logmel"].evaluation.official_score for p in channels_lib.POLICIES}
  assert score[channels_lib.CANCEL] > score[channels_lib.NEAR], score


def test_a_mono_recording_is_refused_by_far_and_cancel_and_read_with_a_warning_by_near_and_mean(runs, tmp_path):
  _, result = runs[channels_lib.NEAR]
  clip = result.test_records[0]
  mono = tmp_path / clip.machine / "test" / pathlib.Path(clip.path).name
  mono.parent.mkdir(parents=True)
  soundfile.write(str(mono), soundfile.read(clip.path, dtype="int16")[0][:, 0], 16_000, subtype="PCM_16")
  for policy in channels_lib.POLICIES:
    det = detector_lib.Detector(runs[policy][1].detector_dir)
    if channels_lib.needs_two(policy):
      with pytest.raises(detect.InputError) as info:
        detect.detect(det, [str(mono)])
      assert info.value.problems == [
          f"{mono}: 1 channel(s), but this detector reads recordings with channel policy {policy!r}, which needs "
          "exactly 2 (channel 0 near the machine, channel 1 far); its models were trained on 2-channel clips read "
          "that way and cannot score it"]
      continue
    alone, pair = detect.detect(det, [str(mono), clip.path])
    assert alone.warning == (f"1 channel(s) where the training clips had 2 (channel policy {policy!r} reads its one "
                             "channel)")
    assert pair.warning == ""
    if policy == channels_lib.NEAR:  # the mono file holds exactly the near channel
      assert alone.score == pair.score


def test_a_workdir_embedded_with_another_policy_is_embedded_again(runs, dataset, tmp_path):
  workdir = tmp_path / "work"
  shutil.copytree(runs[channels_lib.NEAR][0], workdir)
  again = pipeline.run(_config(dataset, channels_lib.NEAR), str(workdir), progress=False)
  assert again.actions["log_mel"]["embed"] == "cached"
  other = pipeline.run(_config(dataset, channels_lib.FAR), str(workdir), progress=False)
  assert other.actions["log_mel"]["embed"] == "ran"
  assert other.systems["logmel"].evaluation.official_score == pytest.approx(
      runs[channels_lib.FAR][1].systems["logmel"].evaluation.official_score, abs=1e-12)


def _demo_2026(*overrides):
  """configs/demo_2026.py as `--config=... [--config.x=y ...]` gives it to the pipeline program."""
  argv = ["prog", f"--config={REPO_ROOT / 'configs' / 'demo_2026.py'}", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_demo_2026_sets_every_model_s_policy_and_the_pretraining_corpus_s_from_one_field(tmp_path):
  default = _demo_2026()
  assert default.model_keys == demo_pipeline.get_config().model_keys  # the demo's models and reference rows
  assert "log_mel" in default.model_keys.split(",")
  for policy in channels_lib.POLICIES:
    c = _demo_2026(f"--config.data.root={tmp_path}", f"--config.data.channels={policy}")
    specs = specs_lib.model_specs(c)
    assert {s.key: s.channels for s in specs if s.embedded} == {
        k: policy for k in c.model_keys.split(",") if not c.models[k].sources}
    assert all(s.config.data.clip_seconds == 2.0 for s in specs if s.embedded)
    pre = stages.pretrain_config(c, specs_lib.channel_policy(specs))
    assert pre.data.sources.to_dict() == {"dataset": {"path": str(tmp_path), "kind": "dcase", "weight": 1.0,
                                                      "channels": policy}}
  # A corpus source that names its own policy keeps it.
  c = _demo_2026(f"--config.data.root={tmp_path}", "--config.data.channels=cancel")
  c.pretrain.data.sources.dataset.channels = channels_lib.MEAN
  assert stages.pretrain_config(c, channels_lib.CANCEL).data.sources.dataset.channels == channels_lib.MEAN


def test_models_of_different_policies_are_refused_up_front_unless_the_pipeline_sets_one(tmp_path):
  c = _config(tmp_path, "")
  c.model_keys = "log_mel,frozen_eat_random"
  c.models.log_mel.frozen.data.channels = channels_lib.CANCEL
  with pytest.raises(ValueError) as info:
    specs_lib.model_specs(c)
  assert str(info.value) == (
      "the models read clips with different channel policies (log_mel: cancel, frozen_eat_random: near); a pipeline, "
      "and the detector it exports, reads every clip with one policy: set --config.data.channels=POLICY (one of "
      "near, far, mean, cancel) for all of them")
  c.data.channels = channels_lib.FAR
  assert {s.channels for s in specs_lib.model_specs(c)} == {channels_lib.FAR}
  c.data.channels = "both"
  with pytest.raises(channels_lib.ChannelError, match="unknown channel policy 'both'"):
    specs_lib.model_specs(c)
