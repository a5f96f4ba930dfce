"""Batched, padded, sharded embedding extraction equals the model applied clip by clip."""

import jax
import numpy as np
import pytest

from asd_jax import embed
from asd_jax.models import classifier
from asd_jax.training import experiment
from asd_jax.training import sharding as shd


def test_embed_batches_matches_per_clip_forward(tiny_encoder, frontend):
  model = classifier.Classifier(encoder=tiny_encoder(), num_classes=3, frontend=frontend)
  wav = np.random.default_rng(0).normal(size=(7, 1024)).astype(np.float32)
  params = model.init(jax.random.key(1), wav[:1])["params"]
  order = np.array([3, 0, 6, 5, 1, 2, 4])  # batches arrive in any order; outputs are placed by index
  batches = [{"wav": wav[order[i:i + 4]], "index": order[i:i + 4]} for i in range(0, 7, 4)]
  # An explicitly masked batch as the ordered pipeline yields it: one padded row marked invalid.
  batches[-1] = {"wav": np.concatenate([batches[-1]["wav"], np.zeros((1, 1024), np.float32)]),
                 "index": np.append(batches[-1]["index"], 0), "valid": np.array([True, True, True, False])}
  mesh = shd.data_mesh()
  forward = embed.make_forward(experiment.classifier_outputs(model), mesh, all_layers=True)
  out = embed.embed_batches(forward, shd.replicate(params, mesh), batches, batch_size=4, mesh=mesh, num_clips=7,
                            progress=False)
  assert out["embedding"].shape == (7, 16) and out["layer_embeddings"].shape == (7, 2, 16)
  for i in range(7):
    ref = model.apply({"params": params}, wav[i:i + 1], all_layers=True)
    np.testing.assert_allclose(out["embedding"][i], ref["embedding"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["layer_embeddings"][i], ref["layer_embeddings"][0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out["layer_embeddings"][:, -1], out["embedding"])


def test_embed_batches_reports_skipped_clips(tiny_encoder, frontend):
  model = classifier.Classifier(encoder=tiny_encoder(), num_classes=3, frontend=frontend)
  wav = np.zeros((2, 1024), np.float32)
  params = model.init(jax.random.key(1), wav[:1])["params"]
  mesh = shd.data_mesh()
  with pytest.raises(ValueError, match="1 of 3 clips got no embedding"):
    embed.embed_batches(embed.make_forward(experiment.classifier_outputs(model), mesh, False), params,
                        [{"wav": wav, "index": np.array([0, 1])}], batch_size=2, mesh=mesh, num_clips=3, progress=False)
