"""What every encoder returns, and how its tokens are pooled into clip embeddings.

Both BEATs and EAT return an `EncoderOutput`: the output of every transformer layer (for multi-layer
fusion) plus which tokens are real. Downstream code (heads, embedding extraction) only sees this type,
so the two encoders are interchangeable there.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

POOL_MEAN = "mean"  # mean over real frame tokens (prefix tokens such as CLS excluded)
POOL_CLS = "cls"  # the first prefix token (EAT's utterance embedding)


@flax.struct.dataclass
class EncoderOutput:
  """Per-layer token outputs of a transformer encoder.

  Attributes:
    layer_outputs: tuple of L arrays `[batch, tokens, dim]`, the output of each transformer layer in order.
    token_mask: `[batch, tokens]` bool, True for real tokens, False for padding; None when nothing is padded.
    num_prefix_tokens: tokens in front of the frame tokens (1 for EAT's CLS token, 0 for BEATs).
  """

  layer_outputs: tuple[jax.Array, ...]
  token_mask: jax.Array | None = None
  num_prefix_tokens: int = flax.struct.field(pytree_node=False, default=0)

  @property
  def features(self) -> jax.Array:
    """Final tokens `[batch, tokens, dim]`: the last layer's output."""
    return self.layer_outputs[-1]


def pool_tokens(tokens: jax.Array, token_mask: jax.Array | None, num_prefix_tokens: int,
                mode: str = POOL_MEAN) -> jax.Array:
  """Pools `tokens: [batch, tokens, dim]` into clip embeddings `[batch, dim]`.

  `mean` averages the real frame tokens (prefix tokens and padding excluded); `cls` takes token 0.
  """
  if mode == POOL_CLS:
    if num_prefix_tokens < 1:
      raise ValueError("pool mode 'cls' needs an encoder with a CLS token (num_prefix_tokens >= 1)")
    return tokens[:, 0]
  if mode != POOL_MEAN:
    raise ValueError(f"unknown pool mode {mode!r}; expected {POOL_MEAN!r} or {POOL_CLS!r}")
  frames = tokens[:, num_prefix_tokens:]
  if token_mask is None:
    return jnp.mean(frames, axis=1)
  weights = token_mask[:, num_prefix_tokens:].astype(frames.dtype)[..., None]
  return jnp.sum(frames * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def pool_layers(output: EncoderOutput, mode: str = POOL_MEAN) -> jax.Array:
  """Pooled embedding of every layer, `[batch, layers, dim]` (layer order as in `layer_outputs`)."""
  return jnp.stack([pool_tokens(x, output.token_mask, output.num_prefix_tokens, mode)
                    for x in output.layer_outputs], axis=1)
