"""Test fixtures for training: a tiny attention encoder with the BEATs/EAT contract, and saveable batches.

`TinyEncoder` has the same interface and parameter naming as the real encoders (Dense submodules
`q_proj`, `k_proj`, `v_proj`, `out_proj` per block, 'dropout' rng, `EncoderOutput`), small enough that a
training step compiles and runs in well under a second on CPU. `ArrayBatches` stands in for the Grain
iterator in loop tests (endless, reshuffled per epoch, position saveable).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asd_jax.models import encoder_output as eo
from asd_jax.models import networks

TINY = "tiny_attention"  # the encoder family and network name `tiny_registered` registers


class TinyAttention(nn.Module):
  dim: int
  heads: int

  @nn.compact
  def __call__(self, x):
    b, t, _ = x.shape
    split = lambda y: y.reshape(b, t, self.heads, self.dim // self.heads)  # noqa: E731
    q = split(nn.Dense(self.dim, name="q_proj")(x))
    # No key bias: its gradient is exactly zero (softmax is shift-invariant), and Adam would turn the
    # float noise in that zero into visible updates that differ between device layouts.
    k = split(nn.Dense(self.dim, use_bias=False, name="k_proj")(x))
    v = split(nn.Dense(self.dim, name="v_proj")(x))
    attn = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]), axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, t, self.dim)
    return nn.Dense(self.dim, name="out_proj")(out)


class TinyBlock(nn.Module):
  dim: int
  heads: int
  dropout: float

  @nn.compact
  def __call__(self, x, train):
    h = TinyAttention(self.dim, self.heads, name="self_attn")(nn.LayerNorm()(x))
    x = x + nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.Dense(self.dim, name="fc2")(nn.gelu(nn.Dense(2 * self.dim, name="fc1")(nn.LayerNorm()(x))))
    return x + nn.Dropout(self.dropout, deterministic=not train)(h)


class TinyEncoder(nn.Module):
  """fbank [batch, frames, mel] -> EncoderOutput with `layers` outputs [batch, frames // 4, dim]."""

  dim: int = 16
  heads: int = 2
  layers: int = 2
  dropout: float = 0.1

  @nn.compact
  def __call__(self, fbank, padding_mask=None, *, train=False):
    b, t, m = fbank.shape
    x = fbank[:, : t - t % 4].reshape(b, t // 4, 4 * m)
    x = nn.Dense(self.dim, name="patch_embedding")(x)
    outs = []
    for i in range(self.layers):
      x = TinyBlock(self.dim, self.heads, self.dropout, name=f"layers_{i}")(x, train)
      outs.append(x)
    return eo.EncoderOutput(layer_outputs=tuple(outs))


def tiny_frontend(wav):
  """A cheap jittable stand-in for fbank: [batch, samples] -> [batch, samples // 64, 8] frame energies."""
  b, n = wav.shape
  frames = wav[:, : n - n % 64].reshape(b, n // 64, 8, 8)
  return jnp.log(jnp.mean(jnp.square(frames), axis=-1) + 1e-6)


@pytest.fixture(scope="session")
def tiny_encoder():
  return TinyEncoder


@pytest.fixture(scope="session")
def frontend():
  return tiny_frontend


def tiny_entry(tiny_encoder, frontend) -> networks.Encoder:
  """The tiny encoder as an encoder family of `networks.ENCODERS` (trained as a classifier, like BEATs or EAT)."""

  def build(arch, dtype, **options):
    del dtype, options
    return tiny_encoder(**arch)

  def tiny_fbank(wav, target_length=None):
    del target_length
    return frontend(wav)

  return networks.Encoder(build=build, presets={"tiny": dict(dim=16, heads=2, layers=1, dropout=0.1)},
                          frontend=tiny_fbank, load=None)


@pytest.fixture(scope="module")
def tiny_registered(tiny_encoder, frontend):
  """Registers the tiny encoder under `TINY` in `networks.ENCODERS` and `networks.NETWORKS` (a classifier)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(networks.ENCODERS, TINY, tiny_entry(tiny_encoder, frontend))
    patch.setitem(networks.NETWORKS, TINY, networks.classifier_network)
    yield TINY


class ArrayBatches:
  """Endless, reshuffled-per-epoch batches over fixed arrays, with a saveable position."""

  def __init__(self, wav, label, batch_size):
    self.wav, self.label, self.batch_size, self.position = wav, label, batch_size, 0

  def __next__(self):
    per_epoch = len(self.label) // self.batch_size
    epoch, i = divmod(self.position, per_epoch)
    order = np.random.default_rng(epoch).permutation(len(self.label))[i * self.batch_size:(i + 1) * self.batch_size]
    self.position += 1
    return {"wav": self.wav[order], "label": self.label[order], "index": order.astype(np.int32)}

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = state["position"]


@pytest.fixture
def array_batches():
  return ArrayBatches
