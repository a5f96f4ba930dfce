"""`fine_tune.train` killed mid-epoch and resumed by a fresh call equals an uninterrupted run, through the real path:
synthetic wavs, the Grain iterator (its state saved in and restored from the Orbax checkpoint), the config,
checkpoints and metadata. A resume (or an embedding) with other settings than the checkpoint's is refused,
naming each field.

The fast tests register a tiny attention encoder (conftest's `tiny_registered`) under its own name in the encoder registry, so
everything from the config on is the code the CLI runs; the slow one runs the real tiny BEATs of
configs/demo.py.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import soundfile

from asd_jax.audio import wav
from asd_jax.checkpoints import train_state
from asd_jax.data import layout
from asd_jax.data import synth
from asd_jax.finetuning import fine_tune
from asd_jax.finetuning import restore
from asd_jax.models import lora_factors
from asd_jax.training import loop
from asd_jax.training import train_log
from configs import demo

TINY = "tiny_attention"  # conftest.TINY, what its `tiny_registered` registers
EPOCHS = 2
STOP = 3  # steps of the first call: mid-way through the first epoch


pytestmark = pytest.mark.usefixtures("compile_once")  # the runs here compile the same step once


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """One machine type, 2 s clips: 13 train + 6 supplementary clips -> 4 steps of 4 per epoch."""
  root = tmp_path_factory.mktemp("synth")
  synth.generate(root, scale=0.01, seed=0, machines=["ToyCar"], duration=2.0)
  return str(root)


def _config(root, network=TINY):
  config = demo.get_config()
  config.data.root = root
  config.data.clip_seconds = 2.0
  config.model.network = network
  config.model.preset = "tiny"
  config.lora.rank, config.lora.alpha = 4, 8.0
  config.optim.learning_rate = 1e-2
  config.train.epochs = EPOCHS
  config.train.batch_size = 4
  config.train.checkpoint_every = 4  # at the epoch boundary; also at the end and when stopped
  config.train.log_every = 1
  return config


def _train(config, workdir, **kwargs):
  return jax.device_get(fine_tune.train(config, str(workdir), progress=False, **kwargs))


@pytest.fixture(scope="module")
def straight(dataset, tiny_registered, tmp_path_factory):
  """`(workdir, final state)` of the tiny run trained without interruption."""
  workdir = tmp_path_factory.mktemp("straight")
  return workdir, _train(_config(dataset), workdir)


def _assert_refused(config, workdir, *lines, adjustable=False):
  with pytest.raises(ValueError) as error:
    _train(config, workdir)
  message = str(error.value).splitlines()
  assert message[0] == f"checkpoint {workdir / 'checkpoints'} does not match this run's settings:"
  if adjustable:  # every difference may change on a resume: the refusal says how
    assert "run again with --accept_changes" in message.pop(-2)
  assert message[1:-1] == list(lines)  # every differing field, and nothing else
  assert str(workdir / "config.json") in message[-1]


def _stop_early(config, workdir, straight_state):
  """The run killed after `STOP` steps (mid-way through epoch 0), checkpoint written."""
  first = _train(config, workdir, stop_after=STOP)
  assert int(first.step) == STOP
  # The first call really trained: otherwise equal end states would prove nothing.
  assert not np.array_equal(first.params["model"]["head"]["kernel"], straight_state.params["model"]["head"]["kernel"])


def _resume_equals(config, workdir, straight_state):
  """A fresh call resumes the stopped run (through the epoch boundary) to the uninterrupted run's end state."""
  resumed = _train(config, workdir)
  steps = int(straight_state.step)
  assert steps == 4 * EPOCHS and int(resumed.step) == steps
  for part in ("params", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, getattr(straight_state, part), getattr(resumed, part))
  rows = train_log.read_jsonl(workdir / "metrics.jsonl")
  assert [r["step"] for r in rows if "loss" in r] == list(range(1, steps + 1))


def test_killed_and_resumed_train_equals_uninterrupted_train(dataset, straight, tmp_path):
  config = _config(dataset)
  _stop_early(config, tmp_path, straight[1])
  # Other settings than the checkpoint's are refused before anything is computed or written.
  changed = _config(dataset)
  changed.lora.rank = 8
  changed.optim.learning_rate = 2e-3
  _assert_refused(changed, tmp_path, "  config.lora.rank: saved 4, now 8",
                  "  config.optim.learning_rate: saved 0.01, now 0.002")
  fewer_epochs = _config(dataset)
  fewer_epochs.train.epochs = 1
  _assert_refused(fewer_epochs, tmp_path, "  config.train.epochs: saved 2, now 1", "  num_steps: saved 8, now 4",
                  adjustable=True)
  _resume_equals(config, tmp_path, straight[1])


def test_accept_changes_continues_with_a_new_learning_rate_and_length_and_records_them(dataset, straight, tmp_path):
  """The explicit way on after a divergence: the latest checkpoint, other optimiser settings and length."""
  config = _config(dataset)
  _stop_early(config, tmp_path, straight[1])
  changed = _config(dataset)
  changed.optim.learning_rate = 5e-3
  changed.train.epochs = 3
  _assert_refused(changed, tmp_path, "  config.optim.learning_rate: saved 0.01, now 0.005",
                  "  config.train.epochs: saved 2, now 3", "  num_steps: saved 8, now 12", adjustable=True)
  other_batch = _config(dataset)  # the data order and the state's meaning: never adjustable
  other_batch.optim.learning_rate = 5e-3
  other_batch.train.batch_size = 2
  with pytest.raises(ValueError, match=r"config.train.batch_size: saved 4, now 2") as error:
    _train(other_batch, tmp_path, accept_changes=True)
  assert "learning_rate" not in str(error.value)  # accepted; only what cannot change is listed
  resumed = _train(changed, tmp_path, accept_changes=True)
  assert int(resumed.step) == 4 * 3
  rows = [r for r in train_log.read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
  straight_rows = [r for r in train_log.read_jsonl(straight[0] / "metrics.jsonl") if "loss" in r]
  assert [r["step"] for r in rows] == list(range(1, 13))
  assert [r["loss"] for r in rows[:STOP]] == [r["loss"] for r in straight_rows[:STOP]]  # the first call's steps
  # The rate of update t + 1 (t updates before it) under the new settings, by hand: 5 % of 12 updates of linear
  # warm-up (1), then a cosine from 5e-3 to 0 over the other 11.
  # The step computes it in float32: 1 + cos loses up to ~2 ulp of 1 near the end of the cosine (absolute, hence
  # the atol of peak * 2^-22), the products a few ulp of the value (the rtol).
  by_hand = [5e-3 * 0.5 * (1 + np.cos(np.pi * (t - 1) / 11)) for t in range(STOP, 12)]
  np.testing.assert_allclose([r["learning_rate"] for r in rows[STOP:]], by_hand, rtol=2**-21, atol=5e-3 * 2**-22)
  ckpt = train_state.Checkpointer(tmp_path / "checkpoints")
  try:
    changes = ckpt.restore_meta()[train_state.CHANGES_KEY]
  finally:
    ckpt.close()
  assert changes == [{"step": STOP, "fields": {"config.optim.learning_rate": [0.01, 0.005],
                                               "config.train.epochs": [2, 3], "num_steps": [8, 12]}}]
  assert _train(changed, tmp_path).step == 12  # the new settings are the run's now: a plain resume accepts them


def test_embed_uses_the_checkpoint_alpha_and_refuses_other_model_settings(dataset, straight):
  workdir, trained = straight
  other_alpha = _config(dataset)
  other_alpha.lora.alpha = 1.0
  _, params, source = restore.embedding_params(other_alpha, str(workdir))
  assert source.endswith(f"step {4 * EPOCHS}")
  # W + (8 / 4) A @ B with the trained factors (B has moved away from zero, so alpha matters).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), jax.device_get(params),
               lora_factors.merge_lora(trained.params, alpha=8.0))
  q_kernel = lambda p: p["encoder"]["layers_0"]["self_attn"]["q_proj"]["kernel"]  # noqa: E731
  assert np.abs(q_kernel(params) - q_kernel(lora_factors.merge_lora(trained.params, alpha=1.0))).max() > 1e-4
  other_rank = _config(dataset)
  other_rank.lora.rank = 2
  with pytest.raises(ValueError, match="config.lora.rank: saved 4, now 2"):
    restore.embedding_params(other_rank, str(workdir))


@pytest.mark.slow  # ~1.5 min on 2 busy cores: three compilations of the real tiny BEATs' fbank + gradients
def test_killed_and_resumed_train_equals_uninterrupted_train_real_tiny_beats(dataset, tmp_path):
  config = _config(dataset, network="beats")
  straight_state = _train(config, tmp_path / "straight")
  _stop_early(config, tmp_path / "resumed", straight_state)
  _resume_equals(config, tmp_path / "resumed", straight_state)


# --- damaged data, diverging runs, damaged checkpoints, kills ------------------------------------------------


def _checkpoint_steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _copy_of(dataset, tmp_path):
  root = tmp_path / "data"
  shutil.copytree(dataset, root)
  return root


def _clip_order(config):
  """The training clips in the order the run reads them (epoch 0)."""
  clips = fine_tune.records(config, training=True)
  batches, num_clips = fine_tune.train_batches(config, fine_tune.label_space(config, clips=clips), clips)
  train = fine_tune.training_records(clips, config)
  return [pathlib.Path(train[int(i)].path) for _ in range(num_clips // 4) for i in next(batches)["index"]]


def _nan_at_half_a_second(clip):
  audio, rate = soundfile.read(str(clip), dtype="float32")
  audio[rate // 2] = np.nan  # one sample of a float wav
  soundfile.write(str(clip), audio, rate, subtype="FLOAT")


def test_a_nan_sample_in_a_late_batch_is_refused_before_any_compute(dataset, tiny_registered, tmp_path):
  """Issue 26.4: a NaN sample was found when its batch was read, after compiling and training the steps before it;
  training's scan decodes the float clips (integer PCM cannot hold NaN) and refuses it up front."""
  root = _copy_of(dataset, tmp_path)
  config = _config(str(root))
  damaged = _clip_order(config)[-1]  # in the last batch of the first epoch
  _nan_at_half_a_second(damaged)
  with pytest.raises(layout.DatasetError) as error:
    _train(config, tmp_path / "work")
  assert str(error.value) == (f"1 problem(s) in dataset {root}:\n  {damaged}: 1 non-finite sample value(s) (NaN or "
                              "inf), the first at 0.500 s; the recording is damaged")
  assert [p.name for p in (tmp_path / "work").iterdir()] == [".lock"]  # nothing of a run: no state to resume


def test_a_clip_damaged_during_a_run_stops_it_and_leaves_only_its_finite_checkpoints(dataset, straight, tmp_path,
                                                                                    monkeypatch):
  """A clip damaged after the scan stops the run when its batch is read (step 4). What it leaves: the checkpoints
  of the steps before (finite, trained before the clip changed) and their rows. The next run refuses the damaged
  clip up front, and once the clip is whole again resumes from step 2 to the uninterrupted run's end state."""
  root = _copy_of(dataset, tmp_path)
  config = _config(str(root))
  config.train.checkpoint_every = 2
  damaged = _clip_order(config)[-1]  # read at step 4
  original = damaged.read_bytes()
  real_batches = fine_tune.train_batches

  def damaged_after_the_scan(*args, **kwargs):
    _nan_at_half_a_second(damaged)
    return real_batches(*args, **kwargs)

  monkeypatch.setattr(fine_tune, "train_batches", damaged_after_the_scan)
  with pytest.raises(wav.NonFiniteWavError, match=f"^{damaged}: 1 non-finite sample value"):
    _train(config, tmp_path / "work")
  monkeypatch.undo()
  work = tmp_path / "work"
  assert _checkpoint_steps(work) == [2]
  assert [r["step"] for r in train_log.read_jsonl(work / "metrics.jsonl") if "loss" in r] == [1, 2, 3]
  with pytest.raises(layout.DatasetError, match=f"{damaged}: 1 non-finite sample value"):
    _train(config, work)
  damaged.write_bytes(original)  # the clip as it was: the same content, so the same data
  _resume_equals(config, work, straight[1])


def test_a_resume_onto_changed_clips_is_refused_naming_them(dataset, straight, tmp_path):
  """Issue 26.2: a resume went on silently with clips added, removed or changed since its checkpoint."""
  root = _copy_of(dataset, tmp_path)
  config = _config(str(root))
  _stop_early(config, tmp_path / "work", straight[1])
  train_dir = root / "ToyCar" / "train"
  removed, changed = sorted(train_dir.glob("*.wav"))[:2]
  added = train_dir / re.sub(r"_normal_\d{4}_", "_normal_0999_", removed.name)
  originals = {p: p.read_bytes() for p in (removed, changed)}
  removed.rename(added)  # one clip out, one in: the same count, so the same steps and label space
  audio, rate = soundfile.read(str(changed), dtype="int16")
  soundfile.write(str(changed), audio[::-1].copy(), rate, subtype="PCM_16")  # same size, other content
  with pytest.raises(loop.DataChangedError) as error:
    _train(config, tmp_path / "work")
  name = lambda p: str(p.relative_to(root))  # noqa: E731
  assert str(error.value) == (
      f"checkpoint {tmp_path / 'work' / 'checkpoints'} (step {STOP}) was trained on other clips than this run reads "
      f"({root}): 1 added, 1 removed, 1 changed in content:\n  added: {name(added)}\n  removed: {name(removed)}\n  "
      f"changed: {name(changed)}\nResuming would continue the run on other data (and a changed clip list reorders "
      "every batch). Put the clips back as they were, or start afresh in a new --workdir.")
  added.unlink()
  for path, content in originals.items():
    path.write_bytes(content)
  _resume_equals(config, tmp_path / "work", straight[1])  # the same clips again: resumed as if never touched


def test_a_diverging_run_stops_naming_the_step_and_never_saves_it(dataset, tiny_registered, tmp_path):
  config = _config(dataset)
  config.optim.learning_rate = 1e30  # positive, so allowed; the parameters overflow within two steps
  config.optim.warmup_fraction = 0.0
  config.train.checkpoint_every = 1
  with pytest.raises(loop.NonFiniteError, match=r"training diverged at step (\d+)") as error:
    _train(config, tmp_path)
  step = int(re.search(r"at step (\d+)", str(error.value)).group(1))
  assert f"nothing of this step is saved, the last checkpoint is step {step - 1} in {tmp_path / 'checkpoints'}" in (
      str(error.value))
  assert f"To continue from step {step - 1} with other settings" in str(error.value)
  assert "--accept_changes" in str(error.value)
  assert _checkpoint_steps(tmp_path) == list(range(1, step))  # every step before it, none from it on
  rows = train_log.read_jsonl(tmp_path / "metrics.jsonl")
  assert rows[-1]["step"] == step and not np.isfinite(rows[-1]["loss"] * rows[-1]["grad_norm"])


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_readable_step(dataset, straight, tmp_path, caplog):
  config = _config(dataset)
  config.train.checkpoint_every = 1
  config.train.keep_checkpoints = 3
  _train(config, tmp_path, stop_after=STOP)
  assert _checkpoint_steps(tmp_path) == [1, 2, 3]
  for chunk in (tmp_path / "checkpoints" / "3" / "state").rglob("*"):
    if chunk.is_file() and chunk.parent.name == "d":  # one flipped bit in each data file of the state
      data = bytearray(chunk.read_bytes())
      data[len(data) // 2] ^= 0x01
      chunk.write_bytes(bytes(data))
  with caplog.at_level("WARNING"):
    # Resumed from step 2 and on to the end; equal to the uninterrupted run, one metrics row per step (the
    # killed run's row of step 3 is dropped). What happens to the steps themselves: test_checkpoints.py.
    _resume_equals(config, tmp_path, straight[1])
  warned = "\n".join(r.getMessage() for r in caplog.records)
  # TensorStore's own check ("DATA_LOSS") or the state checksum, whichever sees it first.
  assert re.search(f"checkpoint step 3 in {tmp_path / 'checkpoints'} is (unreadable|damaged)", warned), warned
  assert "resuming from step 2, the newest readable step" in warned
  assert (tmp_path / "checkpoints" / "3.unreadable").is_dir()  # kept apart, for inspection
  assert _checkpoint_steps(tmp_path) == [6, 7, 8]  # Orbax's keep-the-last-3, counting only readable steps


@pytest.mark.slow  # ~1 min on 2 busy cores: a subprocess compiles and trains, then this process resumes
def test_killed_with_sigkill_during_checkpointing_and_resumed_equals_uninterrupted(dataset, straight, tmp_path):
  worker = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).with_name("train_worker.py")), dataset,
                             str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and worker.poll() is None:
      rows = train_log.read_jsonl(tmp_path / "metrics.jsonl") if (tmp_path / "metrics.jsonl").exists() else []
      if sum("loss" in r for r in rows) >= 3:
        break
      time.sleep(0.05)
    assert worker.poll() is None, worker.stderr.read().decode()[-3000:]
    time.sleep(0.2)  # inside the pause after step 3's row: step 3's checkpoint is being written
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
  finally:
    if worker.poll() is None:
      worker.kill()
  assert worker.returncode == -signal.SIGKILL
  config = _config(dataset)
  config.train.checkpoint_every = 1
  _resume_equals(config, tmp_path, straight[1])  # the dead process' lock is taken over; one row per step
  leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.isdigit()]
  assert not leftovers, leftovers


def test_a_full_disk_at_a_checkpoint_stops_naming_its_folder_and_a_rerun_resumes(dataset, straight, tmp_path,
                                                                                   monkeypatch, caplog):
  """Issue 26.3: a checkpoint save on a full disk was `[Errno 28] No space left on device` under Orbax's tracebacks
  (one from each of its save threads). Injected at Orbax's own write of the step's JSON items (`epath`), so the
  failure takes Orbax's path: its background threads, its finalisation, the manager's next save."""
  import errno  # pylint: disable=import-outside-toplevel
  from etils import epath  # pylint: disable=import-outside-toplevel
  from asd_jax import errors  # pylint: disable=import-outside-toplevel
  config = _config(dataset)
  config.train.checkpoint_every = 1
  real_write_text = epath.Path.write_text

  def full_disk(path, *args, **kwargs):
    if any(part.startswith("3.orbax-checkpoint-tmp") for part in pathlib.Path(path).parts):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_write_text(path, *args, **kwargs)

  monkeypatch.setattr(epath.Path, "write_text", full_disk)
  errors.quiet_orbax_error_logs()  # as the programs do by default
  try:
    with caplog.at_level("INFO"), pytest.raises(train_state.CheckpointWriteError) as error:
      _train(config, tmp_path)
  finally:
    errors.quiet_orbax_error_logs(False)
    monkeypatch.undo()
  checkpoints = tmp_path / "checkpoints"
  assert str(error.value) == (
      f"cannot write checkpoint step 3 to {checkpoints / '3'} (OSError: [Errno 28] No space left on device); that "
      f"step is not saved (Orbax never reads its unfinished folder): the latest checkpoint is step 2 in "
      f"{checkpoints}; once the cause (a full disk?) is fixed, run again to continue from it")
  assert not [r for r in caplog.records if r.levelname == "ERROR" and f"{os.sep}orbax{os.sep}" in r.pathname]
  assert _checkpoint_steps(tmp_path) == [1, 2]
  _resume_equals(config, tmp_path, straight[1])  # nothing half-written is read: the run goes on from step 2
