"""The FLOP accounting behind the per-host read rate in BENCHMARKS.md, against XLA's own count of the same ops.

`encoder_forward_flops` counts only the matmuls (projections, MLP, attention); XLA's cost analysis of the
real Flax EAT encoder also counts the patch embedding and the elementwise ops (LayerNorm, softmax, GELU,
biases). With the patch embedding added, what is left must be positive and small: the elementwise ops do
O(1) work per activation element, against O(dim) per element for the matmuls, so at dim 128 they are a
few percent (at EAT-large's dim 1024 well under 1 %). The decoder's grouped convolutions are counted
exactly (2 FLOPs per multiply-add, every kernel tap, as a padded convolution computes them), so XLA, which
skips the taps on the zero padding, must agree once those are taken off.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from asd_jax.models import eat
from benchmarks import bench_corpus


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def test_encoder_matmul_flops_against_xla():
  config = dataclasses.replace(eat.EAT_TINY, depth=4, embed_dim=128, num_heads=4, target_length=1024)
  model = eat.EAT(config)
  fbank = jnp.zeros((1, 1024, 128))
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), fbank))
  xla = _xla_flops(lambda p, x: model.apply(p, x), params, fbank)
  tokens = 512 + 1
  patch_embed = 512 * 16 * 16 * 128 * 2
  remainder = xla - bench_corpus.encoder_forward_flops(4, 128, tokens) - patch_embed
  assert 0 < remainder < 0.1 * xla


def test_decoder_conv_flops_against_xla():
  shape = dataclasses.replace(bench_corpus.EAT_BASE_PRETRAIN, depth=1, dim=64, decoder_dim=32, decoder_layers=2,
                              decoder_kernel=3, decoder_groups=4, clones=1)

  class Decoder(nn.Module):
    @nn.compact
    def __call__(self, x):  # [1, 64, 8, dim]: the patch grid
      for _ in range(shape.decoder_layers):
        x = nn.Conv(shape.decoder_dim, (shape.decoder_kernel,) * 2, feature_group_count=shape.decoder_groups,
                    padding="SAME", use_bias=False)(x)
      return nn.Dense(shape.dim, use_bias=False)(x)

  x = jnp.zeros((1, 64, 8, shape.dim))
  params = jax.eval_shape(lambda: Decoder().init(jax.random.PRNGKey(0), x))
  xla = _xla_flops(lambda p, x: Decoder().apply(p, x), params, x)
  counted = bench_corpus.eat_pretraining_flops(shape)["decoder"] / 3  # forward only, one clone
  # The formula counts every kernel tap at every position (the work a padded convolution does); XLA leaves
  # out the taps that fall on the zero padding: (64 * 3 - 2) x (8 * 3 - 2) real taps of 512 x 9.
  conv_macs_per_tap = 64 // 4 * 32 + 32 // 4 * 32  # the two layers: C_in / groups * C_out
  padding_taps = 512 * 9 - (64 * 3 - 2) * (8 * 3 - 2)
  assert xla == counted - 2 * padding_taps * conv_macs_per_tap


def test_large_total_and_its_parts():
  flops = bench_corpus.eat_pretraining_flops(bench_corpus.EAT_LARGE_PRETRAIN)
  assert flops["total"] == pytest.approx(flops["teacher"] + flops["student"] + flops["decoder"])
  # 16 student views of 129 tokens, forward + backward, outweigh one teacher pass over 513 tokens ~11x.
  assert 10 < flops["student"] / flops["teacher"] < 12
  assert 4.3e12 < flops["total"] < 4.6e12


@pytest.mark.slow
def test_quick_run_gives_a_section():
  section = bench_corpus.run(quick=True)
  assert section.startswith("## Pre-training corpus") and "clips/s per host" in section
