"""The data-parallel step on two devices equals the single-device step on the same global batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.finetuning import lora
from asd_jax.models import classifier
from asd_jax.runtime import sharding as shd
from asd_jax.training import optimizer
from asd_jax.training import train_step as ts
from configs import common


def test_two_device_step_equals_single_device_step(tiny_encoder, frontend):
  assert len(jax.devices()) >= 2, "conftest should provide two CPU devices"
  model = classifier.Classifier(encoder=tiny_encoder(dropout=0.0), num_classes=3, frontend=frontend,
                                dropout_rate=0.0)
  wav = np.asarray(jax.random.normal(jax.random.key(0), (8, 1024)))
  batch = {"wav": wav, "label": np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int32)}
  params = {"model": model.init(jax.random.key(1), wav[:1])["params"]}
  labels = lora.trainable_labels(params, train_encoder=True)
  optim = common.get_config().optim
  optim.update(dict(learning_rate=1e-3, warmup_steps=2, schedule="cosine",
                    weight_decay=0.05, grad_clip_norm=1.0))
  tx, _ = optimizer.make_optimizer(optim, 10, labels)
  loss = lora.with_lora(functools.partial(classifier.classification_loss, model=model), alpha=1.0)
  step = ts.make_train_step(loss, tx, labels)
  rng = jax.random.key(2)

  results = []
  for devices in (jax.devices()[:1], jax.devices()[:2]):
    mesh = shd.data_mesh(devices)
    state = shd.replicate(ts.create_state(params, tx), mesh)
    jitted = ts.jit_train_step(step, mesh, donate=False)
    metrics_seen = []
    for _ in range(3):
      state, metrics = jitted(state, shd.put_batch(batch, mesh), rng)
      metrics_seen.append(jax.device_get(metrics))
    if len(devices) == 2:
      assert state.params["model"]["head"]["kernel"].sharding.is_fully_replicated
      assert len(shd.put_batch(batch, mesh)["wav"].addressable_shards) == 2
    results.append((jax.device_get(state.params), metrics_seen))

  (p1, m1), (p2, m2) = results
  for a, b in zip(m1, m2):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p2)
  assert not np.allclose(p1["model"]["head"]["kernel"], params["model"]["head"]["kernel"])


def test_extra_state_is_threaded_through_the_step():
  # A loss with non-trainable state (like SCAdaCos' adaptive scale): a running count kept in `extra`.
  def loss_fn(params, extra, batch, rng):
    loss = jnp.mean((batch["x"] * params["w"] - 1.0) ** 2)
    return loss, ({"seen": extra["count"]}, {"count": extra["count"] + batch["x"].shape[0]})

  import optax
  tx = optax.sgd(0.1)
  state = ts.create_state({"w": jnp.zeros(())}, tx, extra={"count": jnp.zeros((), jnp.int32)})
  step = jax.jit(ts.make_train_step(loss_fn, tx))
  for _ in range(2):
    state, metrics = step(state, {"x": jnp.ones(4)}, jax.random.key(0))
  assert int(state.extra["count"]) == 8 and int(metrics["seen"]) == 4 and int(state.step) == 2
  # w after two SGD steps on (w - 1)^2: 0 -> 0.2 -> 0.36.
  np.testing.assert_allclose(float(state.params["w"]), 0.36, rtol=1e-6)
