"""The dual-branch model through the shared training path: sharding, the LoRA partition, resume, embedding.

Fast tests use two tiny attention encoders (conftest) as the BEATs and EAT branches; the slow ones run the
real tiny BEATs + EAT of configs/demo_dual.py, and the CLIs end to end on a small synthetic dataset.
"""

import functools
import json

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.checkpoints import train_state
from asd_jax.embedding import extract
from asd_jax.finetuning import fine_tune
from asd_jax.models import dual_branch
from asd_jax.models import lora_factors
from asd_jax.models import networks
from asd_jax.runtime import sharding as shd
from asd_jax.training import loop
from asd_jax.training import optimizer
from asd_jax.training import train_log
from asd_jax.training import train_step as ts
from configs import demo_dual

NUM_CLASSES = 3
SAMPLES = 1024
STEPS = 3


def _config():
  config = demo_dual.get_config()
  config.data.clip_seconds = SAMPLES / config.data.sample_rate
  config.loss.num_subclusters = 2
  config.lora.rank, config.lora.alpha = 4, 8.0
  config.optim.learning_rate = 1e-2
  return config


def _tiny_model(tiny_encoder):
  return dual_branch.DualBranch(beats=tiny_encoder(dim=16, layers=2), eat=tiny_encoder(dim=8, layers=1))


def _tiny_network(tiny_encoder, frontend, config):
  return networks.dual_network_of(config, _tiny_model(tiny_encoder), networks.dual_loss_config(config, NUM_CLASSES),
                                  functools.partial(networks.dual_frontend, (frontend, frontend)))


def _batch(size=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"wav": rng.normal(size=(size, SAMPLES)).astype(np.float32),
          "label": (np.arange(size) % NUM_CLASSES).astype(np.int32), "index": np.arange(size, dtype=np.int32)}


def _steps(run, train_step, batch, devices, steps=STEPS):
  mesh = shd.data_mesh(devices)
  state = shd.replicate(jax.tree.map(jnp.copy, run.state), mesh)  # copies: the jitted step donates its input
  step = ts.jit_train_step(train_step, mesh)
  rng = shd.replicate(jax.random.key(3), mesh)  # placed as `loop.fit` places it, so fit reuses this compilation
  seen = []
  for _ in range(steps):
    state, step_metrics = step(state, shd.put_batch(batch, mesh), rng)
    seen.append(jax.device_get(step_metrics))
  return jax.device_get(state), seen


@pytest.fixture(scope="module")
def tiny(tiny_encoder, frontend):
  """`(network, run, train_step)` of the tiny dual network with LoRA, built once for the module: compiling
  even a tiny model's init and step takes seconds, and jit reuses compilations of the same step function."""
  config = _config()
  network = _tiny_network(tiny_encoder, frontend, config)
  run = fine_tune.setup(config, network, jax.random.key(0), total_steps=10)
  return network, run, run.train_step()


@pytest.fixture(scope="module")
def tiny_runs(tiny):
  """The same dual LoRA run on one device and split over two: (run, state_1, metrics_1, state_2, metrics_2)."""
  assert len(jax.devices()) >= 2, "conftest should provide two CPU devices"
  _, run, train_step = tiny
  batch = _batch()
  one, m1 = _steps(run, train_step, batch, jax.devices()[:1])
  two, m2 = _steps(run, train_step, batch, jax.devices()[:2])
  return run, one, m1, two, m2


def test_two_device_dual_step_equals_single_device_step(tiny_runs):
  _, one, m1, two, m2 = tiny_runs
  for a, b in zip(m1, m2):
    assert set(a) >= {"loss", "main_loss", "featex_loss", "main_scale", "featex_scale", "grad_norm"}
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
  # Adam normalises each update, so float-rounding differences of the gradient sums show up at ~1e-5 of
  # parameters that moved by ~3e-2 (3 steps at lr 1e-2).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), one.params, two.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), one.extra, two.extra)


def _assert_only_trainable_moved(initial, final, labels):
  """Frozen leaves of both encoders bit-identical; every trainable leaf (LoRA A/B of both branches, featex
  centres) moved; the main head's centres fixed, both scales re-estimated."""
  before, after = tu.flatten_dict(jax.device_get(initial.params)), tu.flatten_dict(final.params)
  flat_labels = tu.flatten_dict(labels)
  moved_lora = set()
  for keys, label in flat_labels.items():
    same = np.array_equal(np.asarray(before[keys]).view(np.uint32), np.asarray(after[keys]).view(np.uint32))
    if label == optimizer.FROZEN:
      assert keys[:2] == ("model", "encoder") and same, keys
    else:
      assert keys[0] == "lora" or keys[:3] == ("model", "head", "featex_centres"), keys
      assert not same, keys
      if keys[0] == "lora":
        moved_lora.add(keys[2])
  assert moved_lora == {"beats", "eat"}
  np.testing.assert_array_equal(final.extra["main_centres"], np.asarray(initial.extra["main_centres"]))
  for name in ("main_scale", "featex_scale"):
    assert float(final.extra[name]) != float(initial.extra[name]), name


def test_dual_lora_steps_move_only_factors_featex_centres_and_scales(tiny_runs):
  run, one, *_ = tiny_runs
  _assert_only_trainable_moved(run.state, one, run.labels)
  # Optimiser moments exist for trainable leaves only (mu and nu, plus two step counters).
  trainable = sum(x.size for x, l in zip(jax.tree.leaves(run.state.params), jax.tree.leaves(run.labels))
                  if l == optimizer.TRAINABLE)
  assert sum(x.size for x in jax.tree.leaves(one.opt_state)) == 2 * trainable + 2


def _fit(tiny, workdir, array_batches, stop_after=None):
  """Trains the tiny dual run with the real loop and checkpoints; new checkpointer, writer and iterator."""
  network, run, train_step = tiny
  data = _batch(size=16, seed=1)
  ckpt = train_state.Checkpointer(workdir / "checkpoints", keep=2)
  writer = train_log.MetricWriter(workdir)
  state = loop.fit(jax.tree.map(jnp.copy, run.state), train_step, array_batches(data["wav"], data["label"], 8),
                   num_steps=6, mesh=shd.data_mesh(), rng=jax.random.key(3), checkpointer=ckpt, checkpoint_every=3,
                   meta={"network": network.name}, writer=writer, log_every=1, progress=False, stop_after=stop_after,
                   shown_metrics=network.progress_metrics)
  ckpt.close()
  writer.close()
  return jax.device_get(state)


def test_dual_resume_equals_uninterrupted_run(tiny, array_batches, tmp_path):
  straight = _fit(tiny, tmp_path / "straight", array_batches)
  first = _fit(tiny, tmp_path / "resumed", array_batches, stop_after=3)
  resumed = _fit(tiny, tmp_path / "resumed", array_batches)
  assert int(first.step) == 3 and int(straight.step) == int(resumed.step) == 6
  for part in ("params", "opt_state", "extra"):
    jax.tree.map(np.testing.assert_array_equal, getattr(straight, part), getattr(resumed, part))
  # The scales adapt every step, so a resume that dropped `extra` would not match.
  assert float(first.extra["featex_scale"]) != float(straight.extra["featex_scale"])
  rows = train_log.read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
  assert [r["step"] for r in rows if "loss" in r] == list(range(1, 7))
  assert all({"main_loss", "featex_loss", "main_scale", "featex_scale"} <= set(r) for r in rows if "loss" in r)


def test_dual_embed_outputs(tiny, tiny_encoder, frontend):
  network, run, _ = tiny
  params = run.state.params["model"]
  wav = _batch(size=5)["wav"]
  batches = [{"wav": wav[:4], "index": np.arange(4)},
             {"wav": np.concatenate([wav[4:], np.zeros((3, SAMPLES), np.float32)]),
              "index": np.array([4, 0, 0, 0]), "valid": np.array([True, False, False, False])}]
  mesh = shd.data_mesh()
  out = extract.embed_batches(extract.make_forward(network.outputs, mesh, all_layers=True), shd.replicate(params, mesh),
                            batches, batch_size=4, mesh=mesh, num_clips=5, progress=False)
  assert {k: v.shape for k, v in out.items()} == {"embedding": (5, 24), "layers_beats": (5, 2, 16),
                                                  "layers_eat": (5, 1, 8)}
  fbank = frontend(wav)
  want = dual_branch.embed(_tiny_model(tiny_encoder), params, fbank, fbank)
  np.testing.assert_allclose(out["embedding"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out["embedding"], np.concatenate([out["layers_beats"][:, -1],
                                                                  out["layers_eat"][:, -1]], axis=-1))
  last = extract.embed_batches(extract.make_forward(network.outputs, mesh, all_layers=False), params, batches[:1],
                             batch_size=4, mesh=mesh, num_clips=4, progress=False)
  assert set(last) == {"embedding"}
  np.testing.assert_allclose(last["embedding"], want[:4], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~1 min on 2 busy cores: compiling the real encoders' init, fbanks and gradients
def test_real_tiny_encoders_dual_lora_steps():
  """configs/demo_dual.py's network (tiny BEATs + tiny EAT, fbanks from waveforms): 2 devices equal 1, and
  only LoRA factors of both encoders, the featex centres and the scales change."""
  config = demo_dual.get_config()
  config.data.clip_seconds = 0.5
  run = fine_tune.setup(config, networks.build_network(config, NUM_CLASSES), jax.random.key(0),
                              total_steps=10)
  train_step = run.train_step()
  wav = np.random.default_rng(0).normal(scale=0.1, size=(4, networks.clip_samples(config))).astype(np.float32)
  batch = {"wav": wav, "label": np.array([0, 1, 2, 0], np.int32)}
  one, m1 = _steps(run, train_step, batch, jax.devices()[:1], steps=2)
  two, m2 = _steps(run, train_step, batch, jax.devices()[:2], steps=2)
  assert np.isfinite(m1[-1]["loss"]) and m1[-1]["grad_norm"] > 0
  for a, b in zip(m1, m2):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), one.params, two.params)
  _assert_only_trainable_moved(run.state, one, run.labels)


@pytest.mark.slow  # ~2 min on 2 busy cores: the real CLIs' train + embed on a small synthetic set
def test_train_and_embed_entry_points_end_to_end(tmp_path):
  from asd_jax.data import synth

  summary = synth.generate(tmp_path / "data", scale=0.01, seed=0, machines=["ToyCar", "fan"], duration=1.0)
  config = demo_dual.get_config()
  config.data.root = str(tmp_path / "data")
  config.data.clip_seconds = 1.0
  config.train.epochs = 1
  workdir = tmp_path / "work"
  state = fine_tune.train(config, str(workdir), progress=False)
  rows = train_log.read_jsonl(workdir / "metrics.jsonl")
  steps = [r for r in rows if "loss" in r]
  assert steps and int(state.step) == steps[-1]["step"]
  assert all(np.isfinite(r["loss"]) and {"main_loss", "featex_loss"} <= set(r) for r in steps)
  assert float(state.extra["main_scale"]) != float(np.sqrt(2) * np.log(state.extra["main_centres"].shape[1] - 1))
  again = fine_tune.train(config, str(workdir), progress=False)  # resumes at the end: nothing left to do
  assert int(again.step) == int(state.step)

  from asd_jax.embedding import embed

  out = embed.embed(config, str(workdir), progress=False)
  with np.load(out) as npz:
    shapes = {k: v.shape for k, v in npz.items()}
  n = len(summary["records"])
  assert shapes == {"embedding": (n, 128), "layers_beats": (n, 2, 64), "layers_eat": (n, 2, 64)}
  with open(workdir / "embeddings_records.json") as f:
    records = json.load(f)
  assert records["network"] == "dual_branch" and "step" in records["source"] and len(records["records"]) == n


@pytest.mark.slow  # ~20 s on 2 busy cores: loading both checkpoints, compiling init and forward
def test_dual_branch_from_converted_checkpoints_reproduces_the_reference(fixtures):
  """Both branches load from the released-format fixtures through `networks.ENCODERS` into their own subtrees; with
  LoRA's B = 0 the merged model is the pretrained one, and each branch's pooled layers match the upstream
  PyTorch outputs stored in the fixtures."""
  from asd_jax.models import beats, eat

  config = demo_dual.get_config()
  config.model.beats_checkpoint = str(fixtures / "beats_tiny.pt")
  config.model.eat_checkpoint = str(fixtures / "eat_tiny.pt")
  network = networks.build_network(config, NUM_CLASSES)
  tree, _ = fine_tune.init_trainable(config, network, jax.random.key(0))
  for name, load in (("beats", beats.load), ("eat", eat.load)):
    jax.tree.map(np.testing.assert_array_equal, tree["model"]["encoder"][name], load(fixtures / f"{name}_tiny.pt")[1])
  params = lora_factors.merge_lora(tree, alpha=config.lora.alpha)
  jax.tree.map(np.testing.assert_array_equal, params, tree["model"])

  beats_io, eat_io = np.load(fixtures / "beats_tiny_io.npz"), np.load(fixtures / "eat_tiny_io.npz")
  # Reference layer outputs are [layers, clips, tokens, dim]; both branches mean-pool frame tokens (EAT's
  # token 0 is CLS).
  beats_want = np.swapaxes(beats_io["layer_outputs"].mean(axis=2), 0, 1)
  eat_want = np.swapaxes(eat_io["layer_outputs"][:, :, 1:].mean(axis=2), 0, 1)
  layers = jax.jit(lambda p, b, e: dual_branch.embed_layers(network.module, p, b, e))(
      params, beats_io["fbank"], eat_io["fbank"])
  np.testing.assert_allclose(layers["beats"], beats_want, atol=1e-4)
  np.testing.assert_allclose(layers["eat"], eat_want, atol=1e-4)


def test_pretrained_subtrees_replace_only_their_branch():
  params = {"encoder": {"beats": {"w": np.zeros((2, 3))}, "eat": {"w": np.zeros(4)}}, "head": {"c": np.ones(2)}}
  new = networks.replace_subtree(params, ("encoder", "eat"), {"w": np.arange(4.0)}, "eat.pt")
  np.testing.assert_array_equal(new["encoder"]["eat"]["w"], np.arange(4.0))
  assert new["encoder"]["eat"]["w"].dtype == np.float32
  np.testing.assert_array_equal(new["encoder"]["beats"]["w"], params["encoder"]["beats"]["w"])
  np.testing.assert_array_equal(new["head"]["c"], params["head"]["c"])
  with pytest.raises(ValueError, match=r"eat.pt: parameters do not fit the model at encoder/eat.*\(4,\), \(5,\)"):
    networks.replace_subtree(params, ("encoder", "eat"), {"w": np.zeros(5)}, "eat.pt")
