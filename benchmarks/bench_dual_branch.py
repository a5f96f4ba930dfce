"""Cost of the dual-branch training heads: featex + two SCAdaCos losses (value and gradient) next to a plain
cosine-softmax cross-entropy on the same fused embeddings, jitted, at the system's sizes (fused dim 1536,
K = 16 sub-clusters). The encoders dominate a real step; this shows what the heads add.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from benchmarks.common import machine_description, markdown_table, time_call
from asd_jax.models import featex, scadacos


def _heads_loss(centres, beats, eat, labels, main_centres, rng, *, num_classes, k):
  mixed_rng, ex_rng = jax.random.split(rng)
  lam, apply = featex.draw_mixup(mixed_rng, labels.shape[0])
  (beats, eat), y = featex.mixup((beats, eat), labels, lam, apply)
  main, _, _ = scadacos.scadacos_loss(jnp.concatenate([beats, eat], -1), y, main_centres,
                                      scadacos.initial_scale(num_classes, k), num_subclusters=k)
  exchanged = featex.draw_exchange(ex_rng, labels.shape[0])
  ssl, _, _ = scadacos.scadacos_loss(featex.exchange_features(beats, eat, exchanged),
                                     featex.exchange_labels(y, exchanged), centres,
                                     scadacos.initial_scale(3 * num_classes, k), num_subclusters=k)
  return main + ssl


def _cosine_ce(centres, beats, eat, labels, main_centres, rng, *, num_classes, k):
  del centres, rng, k
  x = jnp.concatenate([beats, eat], -1)
  cos = scadacos.cosine_similarity(x, main_centres[:, :num_classes])
  return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(16.0 * cos), -1))


def run(quick: bool = False) -> str:
  sizes = [(8, 16)] if quick else [(32, 64), (64, 256)]  # (batch, classes)
  k, dim = 16, 1536
  rows = []
  for batch, num_classes in sizes:
    keys = jax.random.split(jax.random.key(0), 5)
    beats = jax.random.normal(keys[0], (batch, dim // 2))
    eat = jax.random.normal(keys[1], (batch, dim // 2))
    labels = jax.nn.one_hot(jax.random.randint(keys[2], (batch,), 0, num_classes), num_classes)
    featex_centres = scadacos.init_centres(keys[3], dim, 3 * num_classes, k)
    main_centres = scadacos.init_centres(keys[4], dim, num_classes, k)
    args = (featex_centres, beats, eat, labels, main_centres, jax.random.key(1))
    times = {}
    for name, fn in (("featex + 2 SCAdaCos", _heads_loss), ("cosine softmax CE", _cosine_ce)):
      step = jax.jit(jax.value_and_grad(functools.partial(fn, num_classes=num_classes, k=k), argnums=(0, 1, 2)))
      times[name] = time_call(lambda: jax.block_until_ready(step(*args)), repeats=3 if quick else 10)
    base = times["cosine softmax CE"][0]
    for name, (median, spread) in times.items():
      rows.append([batch, num_classes, name, median * 1e3, spread * 1e3, median / base])
  table = markdown_table(["batch", "classes C", "loss (value + grad, jit)", "median ms", "spread ms",
                          "x cosine CE"], rows)
  return f"## Dual-branch heads (featex + SCAdaCos, K=16, fused dim 1536)\n\n{machine_description()}\n\n{table}\n"


if __name__ == "__main__":
  print(run())
