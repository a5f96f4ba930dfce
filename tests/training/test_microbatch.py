"""Slicing the inference batch (config.embed.microbatch) changes the speed, never the outputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.embedding import extract
from asd_jax.models import classifier
from asd_jax.models import networks
from asd_jax.runtime import microbatch
from asd_jax.runtime import sharding as shd


def test_in_slices_runs_fn_on_slices_and_restores_the_batch():
  traced_shapes = []

  def fn(x):
    traced_shapes.append(x.shape)
    return {"sum": x.sum(axis=1), "pair": (x * 2.0, x[:, :1])}

  x = jnp.arange(6 * 3, dtype=jnp.float32).reshape(6, 3)
  out = jax.jit(microbatch.in_slices(fn, 2))(x)
  assert traced_shapes == [(2, 3)]  # one body, traced once on a slice, not on the batch
  np.testing.assert_array_equal(out["sum"], np.asarray(x).sum(axis=1))
  np.testing.assert_array_equal(out["pair"][0], 2.0 * np.asarray(x))
  np.testing.assert_array_equal(out["pair"][1], np.asarray(x)[:, :1])


def test_in_slices_with_size_zero_or_a_small_batch_is_the_plain_call():
  traced_shapes = []
  fn = lambda x: traced_shapes.append(x.shape) or x + 1.0  # noqa: E731
  jax.jit(microbatch.in_slices(fn, 0))(jnp.zeros((4, 2)))
  jax.jit(microbatch.in_slices(fn, 8))(jnp.zeros((4, 2)))
  assert traced_shapes == [(4, 2), (4, 2)]


def test_in_slices_rejects_a_batch_that_does_not_split():
  with pytest.raises(ValueError, match="batch of 5 rows does not split into slices of 2"):
    jax.jit(microbatch.in_slices(lambda x: x, 2))(jnp.zeros((5, 3)))


def test_resolve_auto_is_one_clip_at_a_time_on_cpu_and_rejects_negative_values():
  assert jax.default_backend() == "cpu"
  assert microbatch.resolve(microbatch.AUTO) == 1
  assert microbatch.resolve(0) == 0 and microbatch.resolve(4) == 4
  with pytest.raises(ValueError, match="microbatch must be >= 0"):
    microbatch.resolve(-2)


@pytest.mark.parametrize("size", [1, 2])
def test_sliced_embedding_on_two_devices_equals_the_whole_batch(tiny_encoder, frontend, size):
  """A batch of 8 over the 2-device mesh: each device runs its 4 rows `size` at a time; the embeddings equal
  those of the unsliced forward and of the model on each clip alone."""
  assert jax.device_count() == 2
  model = classifier.Classifier(encoder=tiny_encoder(), num_classes=3, frontend=frontend)
  wav = np.random.default_rng(0).normal(size=(8, 1024)).astype(np.float32)
  params = model.init(jax.random.key(1), wav[:1])["params"]
  mesh = shd.data_mesh()
  classifier_outputs = functools.partial(networks.classifier_outputs, model)
  traced_shapes = []

  def outputs(params, wav, all_layers):
    traced_shapes.append(wav.shape)
    return classifier_outputs(params, wav, all_layers)

  batches = [{"wav": wav, "index": np.arange(8)}]
  run = lambda forward: extract.embed_batches(forward, shd.replicate(params, mesh), batches, batch_size=8,  # noqa: E731
                                            mesh=mesh, num_clips=8, progress=False)
  sliced = run(extract.make_forward(outputs, mesh, all_layers=True, microbatch=size))
  whole = run(extract.make_forward(outputs, mesh, all_layers=True))
  assert traced_shapes == [(size, 1024), (8, 1024)]  # the model saw one slice per device, then the whole batch
  for key in ("embedding", "layer_embeddings"):
    np.testing.assert_allclose(sliced[key], whole[key], rtol=1e-5, atol=1e-6)
  for i in (0, 5):
    ref = model.apply({"params": params}, wav[i:i + 1], all_layers=True)
    np.testing.assert_allclose(sliced["embedding"][i], ref["embedding"][0], rtol=1e-5, atol=1e-6)
