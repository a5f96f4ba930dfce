"""`pretrain.pretrain` end to end on synthetic wavs: kill and resume is bit-identical, other settings are refused,
the exported student loads with `eat.load` and fine-tunes through configs/feat.py and configs/leat.py (slow), and
a run can start from a released fairseq checkpoint (student, `_ema` teacher, decoder) or an encoder alone.

The tiny EAT of the demo config on 1 s clips (7 x 8 patches), 2 masked views per clip, a 2-layer decoder:
every piece is the real code path (corpus -> Grain -> fbank -> masks -> objective -> AdamW -> EMA ->
Orbax), sized to compile in seconds. conftest gives two CPU devices, so the step is data-parallel.
"""

import re

import jax
import numpy as np
import pytest

from asd_jax import train
from asd_jax.checkpoints import train_state
from asd_jax.data import synth
from asd_jax.models import eat
from asd_jax.models import networks
from asd_jax.pretraining import pretrain
from asd_jax.training import loop
from asd_jax.training import train_log
from configs import feat
from configs import leat
from configs import pretrain_demo

STEPS = 6  # 19 clips, 4 per step: the run crosses an epoch boundary (data position in the checkpoint)
STOP = 2


pytestmark = pytest.mark.usefixtures("compile_once")  # the runs here compile the same step once


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("synth")
  synth.generate(root, scale=0.01, seed=0, machines=["ToyCar"], duration=1.0)
  return str(root)


def _config(root):
  c = pretrain_demo.get_config(f"dcase:{root}")
  c.data.clip_seconds = 1.0
  c.pretrain.clone_batch = 2
  c.decoder.decoder_layers = 2
  c.ema.decay, c.ema.end_decay, c.ema.anneal_end_step = 0.9, 0.99, STEPS  # a teacher that visibly moves
  c.optim.warmup_steps = 2
  c.train.batch_size = 4
  c.train.num_steps = STEPS
  c.train.checkpoint_every = 3
  c.train.log_every = 1
  return c


def _pretrain(config, workdir, **kwargs):
  return jax.device_get(pretrain.pretrain(config, str(workdir), progress=False, **kwargs))


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  return workdir, _pretrain(_config(dataset), workdir)


def test_killed_and_resumed_pretraining_equals_uninterrupted(dataset, straight, tmp_path):
  config = _config(dataset)
  first = _pretrain(config, tmp_path, stop_after=STOP)
  assert int(first.step) == STOP
  teacher = lambda s: s.extra["teacher"]["blocks_0"]["attn"]["q_proj"]["kernel"]  # noqa: E731
  assert not np.array_equal(teacher(first), teacher(straight[1]))  # the first call really trained
  changed = _config(dataset)
  changed.mask.mask_prob = 0.7
  with pytest.raises(ValueError, match=r"config.mask.mask_prob: saved 0.8, now 0.7"):
    _pretrain(changed, tmp_path)
  resumed = _pretrain(config, tmp_path)
  assert int(resumed.step) == int(straight[1].step) == STEPS
  for part in ("params", "opt_state", "extra"):
    jax.tree.map(np.testing.assert_array_equal, getattr(straight[1], part), getattr(resumed, part))
  rows = train_log.read_jsonl(tmp_path / "metrics.jsonl")
  steps = [r["step"] for r in rows if "loss" in r]
  assert steps == list(range(1, STEPS + 1))
  row = rows[-1]
  assert {"loss", "loss_regression", "loss_cls", "target_var", "pred_var", "ema_decay", "masked_pct",
          "clips_per_s", "step_s"} <= set(row)
  np.testing.assert_allclose(row["masked_pct"], 1 - int(56 * 0.2) / 56, rtol=1e-6)


def test_a_diverging_run_stops_at_its_first_non_finite_step_and_goes_on_from_the_last_good_checkpoint(
    dataset, tmp_path):
  """Issue 26.1: the one train step's finite flag stops pre-training at the first non-finite step, saves nothing of
  it (so it never replaces a finite checkpoint), says how to go on, and a lower learning rate continues the last
  good checkpoint (`accept_changes`) to a finite exported encoder."""
  config = _config(dataset)
  config.train.keep_checkpoints = 1  # a NaN checkpoint would be the only one left
  _pretrain(config, tmp_path, stop_after=STOP + 1)  # steps 1-3 at the config's rate; a checkpoint at step 3
  diverging = _config(dataset)
  diverging.train.keep_checkpoints = 1
  diverging.optim.learning_rate = 1e30  # positive, so allowed; the parameters overflow within two steps
  saved_rate = config.optim.learning_rate  # configs/pretrain_demo.py's
  want = (f"config.optim.learning_rate: saved {saved_rate!r}, now 1e+30\nEach of these may change on a resume: run "
          "again with --accept_changes")
  with pytest.raises(ValueError, match=re.escape(want)):
    _pretrain(diverging, tmp_path)
  with pytest.raises(loop.NonFiniteError) as error:
    _pretrain(diverging, tmp_path, accept_changes=True)
  message = str(error.value)
  step = int(re.match(r"training diverged at step (\d+): loss nan", message).group(1))
  assert STOP + 1 < step <= STEPS
  assert (f"nothing of this step is saved, the last checkpoint is step {STOP + 1} in {tmp_path / 'checkpoints'}. "
          f"To continue from step {STOP + 1} with other settings (a lower config.optim.learning_rate, say), run again "
          "with them and --accept_changes; or start afresh in a new workdir") in message
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [str(STOP + 1)]
  assert not (tmp_path / pretrain.ENCODER_DIR).exists()  # no export of a diverged run
  rows = train_log.read_jsonl(tmp_path / "metrics.jsonl")
  assert rows[-1]["step"] == step and np.isnan(rows[-1]["loss"])  # the diverged step is logged, not saved

  calmer = _config(dataset)
  calmer.train.keep_checkpoints = 1
  calmer.optim.learning_rate = 5e-4
  resumed = _pretrain(calmer, tmp_path, accept_changes=True)
  assert int(resumed.step) == STEPS
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves((resumed.params, resumed.extra)))
  rows = [r for r in train_log.read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # the diverged rows are gone
  # The new rate, by hand: 2 warm-up updates, then a cosine from 5e-4 to 0 over the other STEPS - 2.
  by_hand = [5e-4 * 0.5 * (1 + np.cos(np.pi * (t - 2) / (STEPS - 2))) for t in range(STOP + 1, STEPS)]
  # float32 in the step: 1 + cos is off by up to ~2 ulp of 1 (the atol), the products by a few ulp (the rtol).
  np.testing.assert_allclose([r["learning_rate"] for r in rows[STOP + 1:]], by_hand, rtol=2**-21, atol=5e-4 * 2**-22)
  ckpt = train_state.Checkpointer(tmp_path / "checkpoints")
  try:
    assert ckpt.restore_meta()[train_state.CHANGES_KEY] == [
        {"step": STOP + 1, "fields": {"config.optim.learning_rate": [saved_rate, 0.0005]}}]
  finally:
    ckpt.close()
  _, exported = eat.load(tmp_path / pretrain.ENCODER_DIR)
  jax.tree.map(np.testing.assert_array_equal, exported, resumed.params["student"])
  assert pretrain.is_complete(calmer, str(tmp_path))


def test_a_resume_onto_a_changed_corpus_is_refused_naming_the_clip(dataset, tmp_path):
  """Issue 26.2 for pre-training: a wav source's clips are named `<source>/<path in the source>` with their content
  digests; a packed corpus's shards by the pack's own SHA-256 (tests/data/test_shards.py)."""
  import shutil  # pylint: disable=import-outside-toplevel
  import soundfile  # pylint: disable=import-outside-toplevel
  root = tmp_path / "data"
  shutil.copytree(dataset, root)
  config = _config(str(root))
  work = tmp_path / "work"
  _pretrain(config, work, stop_after=STOP)
  changed = sorted((root / "ToyCar" / "train").glob("*.wav"))[1]
  audio, rate = soundfile.read(str(changed), dtype="int16")
  soundfile.write(str(changed), audio[::-1].copy(), rate, subtype="PCM_16")  # same size, other content
  with pytest.raises(loop.DataChangedError) as error:
    _pretrain(config, work)
  assert str(error.value) == (
      f"checkpoint {work / 'checkpoints'} (step {STOP}) was trained on other clips than this run reads "
      f"(config.data.sources, by source): 0 added, 0 removed, 1 changed in content:\n  changed: "
      f"dcase0/{changed.relative_to(root)}\nResuming would continue the run on other data (and a changed clip list "
      "reorders every batch). Put the clips back as they were, or start afresh in a new --workdir.")


def test_exported_student_is_what_fine_tuning_configs_load(dataset, straight):
  workdir, state = straight
  config, params = eat.load(workdir / pretrain.ENCODER_DIR)
  assert config.depth == 2 and config.embed_dim == 64
  jax.tree.map(np.testing.assert_array_equal, params, state.params["student"])
  for system in (feat, leat):
    c = system.get_config()
    c.model.init_checkpoint = str(workdir / pretrain.ENCODER_DIR)
    built = networks.build_network(c, num_classes=3)
    assert built.pretrained[0][0] == ("encoder",)
    jax.tree.map(np.testing.assert_array_equal, built.pretrained[0][2], params)


@pytest.mark.slow  # two fine-tuning compilations: ~1 min on 2 idle cores
def test_exported_student_fine_tunes_as_feat_and_leat(dataset, straight, tmp_path):
  workdir, _ = straight
  _, params = eat.load(workdir / pretrain.ENCODER_DIR)
  for name, system in (("feat", feat), ("leat", leat)):
    c = system.get_config()
    c.data.root = dataset
    c.data.clip_seconds = 1.0
    c.model.init_checkpoint = str(workdir / pretrain.ENCODER_DIR)
    c.model.dtype = "float32"
    c.train.epochs = 1
    c.train.batch_size = 16  # one step
    c.lora.rank, c.lora.alpha = 4, 4.0
    tuned = jax.device_get(train.train(c, str(tmp_path / name), progress=False))
    assert int(tuned.step) == 1
    loss = train_log.read_jsonl(tmp_path / name / "metrics.jsonl")[-1]["loss"]
    assert np.isfinite(loss), name
    if name == "feat":  # full fine-tuning started from the pretrained weights and moved them
      moved = tuned.params["model"]["encoder"]["blocks_0"]["mlp"]["fc1"]["kernel"]
      start = params["blocks_0"]["mlp"]["fc1"]["kernel"]
      assert 0 < np.abs(moved - start).max() < 1e-3
    else:  # LoRA: the encoder stays the pretrained one
      np.testing.assert_array_equal(tuned.params["model"]["encoder"]["blocks_0"]["mlp"]["fc1"]["kernel"],
                                    params["blocks_0"]["mlp"]["fc1"]["kernel"])


def test_continues_from_a_release_or_an_encoder(dataset, straight, fixtures):
  config = _config(dataset)
  config.decoder.decoder_layers = 6  # eat_tiny.pt's decoder
  config.model.init_checkpoint = str(fixtures / "eat_tiny.pt")
  settings, setup, source = pretrain.build(config, jax.random.key(0))
  state = setup.state
  loaded = eat.load_fairseq_pretraining(fixtures / "eat_tiny.pt")
  assert source.endswith("eat_tiny.pt") and settings.encoder == loaded.config
  for mine, theirs in ((state.params["student"], loaded.student), (state.extra["teacher"], loaded.teacher),
                       (state.params["decoder"], loaded.decoder)):
    jax.tree.map(np.testing.assert_array_equal, mine, theirs)
  config.decoder.decoder_layers = 3
  with pytest.raises(ValueError, match="differs from config.decoder"):
    pretrain.build(config, jax.random.key(0))
  # An encoder alone (here the exported one): the teacher starts as the student, the decoder is new.
  config.model.init_checkpoint = str(straight[0] / pretrain.ENCODER_DIR)
  config.decoder.decoder_layers = 2
  state = pretrain.build(config, jax.random.key(0))[1].state
  jax.tree.map(np.testing.assert_array_equal, state.extra["teacher"], state.params["student"])
  jax.tree.map(np.testing.assert_array_equal, state.params["student"], straight[1].params["student"])


class _Recorder:
  """Stands in for `stages.Progress`: keeps the `(stage, message)` lines and the warnings."""

  def __init__(self):
    self.lines, self.warnings = [], []

  def __call__(self, stage, message):
    self.lines.append((stage, message))

  def warn(self, message):
    self.warnings.append(message)


def _relative_change_by_hand(start, end):
  """||end - start|| / ||start|| over every leaf but the copied position table, in float64."""
  pairs = [(np.asarray(a, np.float64), np.asarray(b, np.float64)) for (path, a), (_, b) in zip(
      jax.tree_util.tree_leaves_with_path(start), jax.tree_util.tree_leaves_with_path(end))
      if "positions" not in jax.tree_util.keystr(path)]
  return np.sqrt(sum(np.sum((b - a) ** 2) for a, b in pairs) / sum(np.sum(a ** 2) for a, _ in pairs))


def test_the_last_row_logs_how_far_the_teacher_moved(dataset, straight):
  """`teacher_change` at the last step: the teacher's relative change from the run's initial encoder (teacher =
  student at update 0), computed here by hand from the trainer's initialisation of the seed."""
  config = _config(dataset)
  _, start, _, _, _ = pretrain.initial_model(config, jax.random.split(jax.random.key(config.seed))[0])
  rows = train_log.read_jsonl(straight[0] / "metrics.jsonl")
  assert [r["step"] for r in rows if "teacher_change" in r] == [STEPS]
  want = _relative_change_by_hand(jax.device_get(start), straight[1].extra["teacher"])
  assert want > 0
  np.testing.assert_allclose(rows[-1]["teacher_change"], want, rtol=1e-9)


def test_the_pipeline_warns_when_the_teacher_cannot_move(dataset, tmp_path):
  """EMA decay 1.0: the teacher keeps its start exactly; the pipeline's pre-training stage warns, naming it."""
  from asd_jax.pipeline import stages
  from asd_jax.pipeline import specs as specs_lib
  from configs import pipeline_base

  pipeline = pipeline_base.get_config("system1")
  pipeline.data.root = dataset
  pre = _config(dataset)
  pre.data.sources = {"mine": {"path": specs_lib.DATA_ROOT, "kind": "dcase", "weight": 1.0}}
  pre.ema.decay = pre.ema.end_decay = 1.0
  pre.train.num_steps = 2
  pipeline.pretrain = pre
  log = _Recorder()
  stages.pretrain_eat(pipeline, str(tmp_path), log, channels="mean", bars=False)
  rows = train_log.read_jsonl(tmp_path / "pretrain" / "metrics.jsonl")
  assert rows[-1]["teacher_change"] == 0.0
  (warning,) = log.warnings
  assert warning.startswith("EAT pre-training: the EMA teacher moved by 0 % of its norm (below 1 %)")
  stages.pretrain_eat(pipeline, str(tmp_path), log, channels="mean", bars=False)
  assert log.lines[-1][1].startswith("cached") and len(log.warnings) == 2  # a cached run warns again


def test_the_pipeline_pretrains_once_and_starts_the_eat_models_from_it(dataset, straight, tmp_path):
  """`pipeline.stages.pretrain_eat`: "<data.root>" reads the pipeline's dataset, the run equals the trainer's
  own (same config, same data), a second call reuses it, and only EAT models with `init` take its encoder."""
  from asd_jax.pipeline import specs as specs_lib
  from asd_jax.pipeline import stages
  from configs import pipeline_base

  pipeline = pipeline_base.get_config("system1")
  pipeline.data.root = dataset
  pre = _config(dataset)
  pre.data.sources = {"mine": {"path": specs_lib.DATA_ROOT, "kind": "dcase", "weight": 1.0}}
  pipeline.pretrain = pre
  log = _Recorder()
  lines = log.lines
  channels = specs_lib.channel_policy(specs_lib.model_specs(pipeline))  # as the pipeline's run passes it
  resolved = stages.pretrain_eat(pipeline, str(tmp_path), log, channels=channels, bars=False)
  encoder = tmp_path / "pretrain" / pretrain.ENCODER_DIR
  assert resolved.init.eat == str(encoder) and pipeline.init.eat == ""  # the caller's config is not changed
  _, params = eat.load(encoder)
  _, straight_params = eat.load(straight[0] / pretrain.ENCODER_DIR)  # source named "dcase0" there: same clips
  jax.tree.map(np.testing.assert_array_equal, params, straight_params)
  assert lines[-1][1].startswith("ran")
  assert stages.pretrain_eat(pipeline, str(tmp_path), log, channels=channels, bars=False).init.eat == str(encoder)
  assert lines[-1][1].startswith("cached")
  resolved.model_keys = "feat,leat,dual_branch,feat_random,frozen_eat,frozen_eat_random"
  specs = {s.key: s for s in specs_lib.model_specs(resolved)}
  for key in ("feat", "leat", "frozen_eat"):
    assert specs[key].config.model.init_checkpoint == str(encoder), key
  assert specs["dual_branch"].config.model.eat_checkpoint == str(encoder)
  for key in ("feat_random", "frozen_eat_random"):
    assert specs[key].config.model.init_checkpoint == "", key
  pipeline.pretrain.optim.learning_rate = 2e-3  # a finished run with other settings is refused, not reused
  with pytest.raises(ValueError, match="config.optim.learning_rate"):
    stages.pretrain_eat(pipeline, str(tmp_path), log, channels=channels, bars=False)
