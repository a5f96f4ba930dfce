"""Batched, padded, sharded embedding extraction equals the model applied clip by clip."""

import functools
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from asd_jax.embedding import extract
from asd_jax.models import classifier
from asd_jax.models import networks
from asd_jax.runtime import sharding as shd


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
  forward = extract.make_forward(functools.partial(networks.classifier_outputs, model), mesh, all_layers=True)
  out = extract.embed_batches(forward, shd.replicate(params, mesh), batches, batch_size=4, mesh=mesh, num_clips=7,
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
    forward = extract.make_forward(functools.partial(networks.classifier_outputs, model), mesh, False)
    extract.embed_batches(forward, params, [{"wav": wav, "index": np.array([0, 1])}], batch_size=2, mesh=mesh,
                          num_clips=3, progress=False)


@pytest.mark.slow  # ~25 s on 2 busy cores: two fresh JAX processes joining a job over gloo
def test_embed_batches_on_two_processes_gathers_every_clip(tiny_encoder, frontend, tmp_path):
  """Two JAX processes (2 CPU devices each) embed their own shards; both return every clip's outputs, equal
  to the model applied clip by clip, although their shards differ in length (process 1 pads the last step)."""
  worker = pathlib.Path(__file__).with_name("multihost_embed_worker.py")
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  procs = [subprocess.Popen([sys.executable, str(worker), str(i), str(port), str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    logs = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  model = classifier.Classifier(encoder=tiny_encoder(), num_classes=3, frontend=frontend)
  wav = np.random.default_rng(0).normal(size=(9, 1024)).astype(np.float32)
  params = model.init(jax.random.key(1), wav[:1])["params"]
  want = model.apply({"params": params}, wav, all_layers=True)
  for i in range(2):
    with np.load(tmp_path / f"process_{i}.npz") as out:
      assert set(out) == {"embedding", "layer_embeddings"}
      np.testing.assert_allclose(out["embedding"], want["embedding"], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(out["layer_embeddings"], want["layer_embeddings"], rtol=1e-5, atol=1e-6)
