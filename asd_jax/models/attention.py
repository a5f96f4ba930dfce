"""Attention for the encoders: the fused path (`jax.nn.dot_product_attention`, with cuDNN's flash kernel on NVIDIA
GPUs) and the two products of the explicit reference path (`attention_logits`, `attend`), computed head-major.

`jax.nn.dot_product_attention` picks XLA's implementation unless told otherwise; its cuDNN implementation
(flash attention) needs a GPU, bfloat16 or float16 inputs, a head dim that is a multiple of 8, and for
training with a bias an even number of tokens. `fused_attention` asks for cuDNN where those hold and falls
back to XLA's implementation (same maths) when cuDNN refuses the call, which it does while tracing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import logging

_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, bias: jax.Array | None = None,
                    mask: jax.Array | None = None, scale: float) -> jax.Array:
  """Softmax attention `[batch, tokens, heads, head_dim]` -> same shape.

  Args:
    q, k, v: `[batch, tokens, heads, head_dim]`, one dtype.
    bias: added to the logits, `[batch or 1, heads or 1, query, key]`, or None.
    mask: bool `[batch or 1, 1, 1 or query, key]`, True = attend, or None.
    scale: multiplies the logits `q . k` before the bias is added.
  """
  if jax.default_backend() == "gpu" and q.dtype in _CUDNN_DTYPES:
    try:
      return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale, implementation="cudnn")
    except (NotImplementedError, ValueError, RuntimeError) as error:  # refused while tracing: use XLA's
      logging.log_first_n(logging.WARNING, "cuDNN attention does not apply (%s); using XLA's", 1, error)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale)


def attention_logits(q: jax.Array, k: jax.Array, scale: float) -> jax.Array:
  """Scaled dot products `q . k * scale`: `[batch, tokens, heads, head_dim]` x2 -> `[batch, heads, query, key]`.

  Heads are moved in front of the tokens first: XLA's CPU dot runs ~10 % faster on head-major operands.
  """
  return jnp.einsum("bhqd,bhkd->bhqk", jnp.swapaxes(q * scale, 1, 2), jnp.swapaxes(k, 1, 2))


def attend(weights: jax.Array, v: jax.Array) -> jax.Array:
  """Weighted sum of values: `weights: [batch, heads, query, key]`, `v: [batch, tokens, heads, head_dim]` ->
  `[batch, query, heads, head_dim]`.

  Computed head-major and transposed back: XLA's CPU dot writing the token-major result directly is ~2.5x
  slower at BEATs' size.
  """
  return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights, jnp.swapaxes(v, 1, 2)), 1, 2)

