"""Fast-path config switches: wired into the built encoders, and donation / one compilation change nothing."""

import functools

import jax
import numpy as np
import pytest

from asd_jax.embedding import extract
from asd_jax.finetuning import lora
from asd_jax.models import classifier
from asd_jax.models import networks
from asd_jax.runtime import sharding as shd
from asd_jax.training import optimizer
from asd_jax.training import train_step as ts
from configs import common


@pytest.mark.parametrize("encoder", ["beats", "eat"])
@pytest.mark.parametrize("attention,remat", [("fused", True), ("reference", False)])
def test_config_switches_reach_the_encoder(encoder, attention, remat):
  config = common.get_config()
  config.model.network, config.model.preset = encoder, "tiny"
  config.model.attention, config.model.remat = attention, remat
  model = networks.build_classifier(
      config.model, networks.encoder_architecture(encoder, config.model.preset)[0], num_classes=2)
  assert model.encoder.fused_attention == (attention == "fused") and model.encoder.remat == remat


def test_auto_attention_is_fused_only_on_gpu():
  config = common.get_config()
  assert config.model.attention == "auto" and not config.model.remat
  assert networks.encoder_options(config.model).get("fused_attention", False) == (jax.default_backend() == "gpu")
  config.model.attention, config.model.remat = "reference", False
  assert networks.encoder_options(config.model) == {}  # an encoder without the switches still builds
  config.model.attention = "flash"
  with pytest.raises(ValueError, match="expected one of"):
    networks.encoder_options(config.model)


@pytest.mark.slow  # ~25 s; donation also runs in every fine-tuning test (train.donate defaults to True)
def test_donated_step_gives_the_same_state(tiny_encoder, frontend):
  model = classifier.Classifier(encoder=tiny_encoder(), num_classes=3, frontend=frontend)
  wav = np.random.default_rng(0).normal(size=(4, 1024)).astype(np.float32)
  batch = {"wav": wav, "label": np.array([0, 1, 2, 0], np.int32)}
  params = {"model": model.init(jax.random.key(1), wav[:1])["params"]}
  labels = lora.trainable_labels(params, train_encoder=True)
  optim = common.get_config().optim
  optim.update(dict(learning_rate=1e-3, warmup_steps=1, schedule="constant", weight_decay=0.01, grad_clip_norm=1.0))
  tx, _ = optimizer.make_optimizer(optim, 10, labels)
  loss = lora.with_lora(functools.partial(classifier.classification_loss, model=model), alpha=1.0)
  step = ts.make_train_step(loss, tx, labels)
  mesh = shd.data_mesh()
  results = []
  for donate in (False, True):
    state = shd.replicate(ts.create_state(params, tx), mesh)
    first_params = state.params
    jitted = ts.jit_train_step(step, mesh, donate=donate)
    for _ in range(3):
      state, _ = jitted(state, shd.put_batch(batch, mesh), jax.random.key(2))
    leaf = jax.tree.leaves(first_params)[0]
    assert leaf.is_deleted() == donate  # donation really happened (and only when asked)
    results.append(jax.device_get(state))
  jax.tree.map(np.testing.assert_array_equal, results[0], results[1])


class CountingForward:
  """A jitted forward that counts its compilations."""

  def __init__(self, forward):
    self.forward, self.compilations = forward, 0

  def lower(self, *args):
    self.compilations += 1
    return self.forward.lower(*args)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_embedding_compiles_once_with_a_short_last_batch(tiny_encoder, frontend, prefetch):
  model = classifier.Classifier(encoder=tiny_encoder(), num_classes=3, frontend=frontend)
  wav = np.random.default_rng(0).normal(size=(5, 1024)).astype(np.float32)
  params = model.init(jax.random.key(1), wav[:1])["params"]
  mesh = shd.data_mesh()
  outputs = functools.partial(networks.classifier_outputs, model)
  forward = CountingForward(extract.make_forward(outputs, mesh, all_layers=False))
  batches = [{"wav": wav[:2], "index": np.arange(2)}, {"wav": wav[2:4], "index": np.arange(2, 4)},
             {"wav": wav[4:], "index": np.array([4])}]
  out = extract.embed_batches(forward, shd.replicate(params, mesh), batches, batch_size=2, mesh=mesh, num_clips=5,
                            progress=False, prefetch=prefetch)
  assert forward.compilations == 1
  ref = model.apply({"params": params}, wav)["embedding"]
  np.testing.assert_allclose(out["embedding"], ref, rtol=1e-5, atol=1e-6)
