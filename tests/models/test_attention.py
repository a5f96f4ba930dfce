"""fused_attention: softmax attention with bias and mask against NumPy, and its fallback from cuDNN to XLA."""

import jax
import jax.numpy as jnp
import numpy as np

from asd_jax.models import attention


def _numpy_attention(q, k, v, bias, mask, scale):
  logits = np.einsum("bqhd,bkhd->bhqk", q.astype(np.float64), k.astype(np.float64)) * scale + bias
  logits = np.where(mask, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", weights, v.astype(np.float64))


def _inputs():
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=(2, 6, 3, 8)).astype(np.float32) for _ in range(3))
  bias = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
  mask = np.ones((2, 1, 1, 6), bool)
  mask[1, ..., 4:] = False  # the last two keys of clip 1 are padding
  return q, k, v, bias, mask


def test_matches_numpy_with_bias_and_key_mask():
  q, k, v, bias, mask = _inputs()
  got = attention.fused_attention(q, k, v, bias=bias, mask=mask, scale=0.3)
  np.testing.assert_allclose(got, _numpy_attention(q, k, v, bias, mask, 0.3), rtol=0, atol=1e-5)


def test_falls_back_to_xla_when_cudnn_refuses(monkeypatch):
  """With the backend taken for a GPU and bf16 inputs the cuDNN call is tried; here (no cuDNN) it is refused
  while tracing, and the result is XLA's."""
  q, k, v, bias, mask = (jnp.asarray(a, jnp.bfloat16) if a.dtype == np.float32 else a for a in _inputs())
  expected = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=0.3)
  monkeypatch.setattr(attention.jax, "default_backend", lambda: "gpu")
  got = jax.jit(lambda *a: attention.fused_attention(*a[:3], bias=a[3], mask=a[4], scale=0.3))(q, k, v, bias, mask)
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(expected, np.float32))
