"""Mixup and feature exchange (featex): the self-supervised label construction of the dual-branch model.

Follows Wilkinghoff, "Self-supervised learning for anomalous sound detection", ICASSP 2024
(code: github.com/wilkinghoff/ssl4asd), with the two branches being BEATs (kept) and EAT (exchanged).
Every partner is the batch reversed (sample b is paired with sample B-1-b), and each augmentation is applied
per sample with probability `prob` (0.5), otherwise the sample keeps its own inputs and labels.

1. Mixup on the inputs (before the encoders): `lam[b] ~ U(0, 1)`;
   `x'[b] = lam[b] * x[b] + (1 - lam[b]) * x[B-1-b]`, `y'[b] = lam[b] * y[b] + (1 - lam[b]) * y[B-1-b]`;
   `y: [B, C]` one-hot class labels, `y': [B, C]` soft labels. `x` is any pytree of `[B, ...]` arrays
   (the waveforms, so both branches see the same mixture).
2. Feature exchange on the clip embeddings `beats: [B, Db]`, `eat: [B, De]`: a sample either keeps its own
   pair, `concat(beats[b], eat[b])` labelled `[y'[b], 0, 0]`, or is exchanged,
   `concat(beats[b], eat[B-1-b])` labelled `[0, y'[b] / 2, y'[B-1-b] / 2]`. Labels are `[B, 3C]`: the first
   C classes are "own pair of class c", the next C "BEATs half of class c in an exchanged pair", the last C
   "EAT half of class c in an exchanged pair", so the head must tell whether the branches come from the
   same clip and from which classes each half comes.
3. Heads and weights (see `dual_branch.py`): a C-class SCAdaCos head with fixed (untrained) centres on the
   unexchanged fused embedding with labels y', weight 1; a 3C-class SCAdaCos head with trained centres on
   the exchanged embedding with the `[B, 3C]` labels, weight 1. At inference nothing is mixed or exchanged.

Departures from the reference, and why:
  * The reference's best system ('statex+featex') also applies statistics exchange (StatEx) to one branch's
    spectrogram, which triples the label space first (C -> 3C), so its featex head has 9C classes and its
    StatEx head (3C) has weight 0. StatEx is not part of this system; without it the featex head has 3C
    classes. `exchange_labels` works on labels of any width L (giving 3L), so StatEx labels would compose.
  * The reference mixes raw waveforms of fixed length; here mixup applies to whatever input pytree the train
    step is given (waveforms when the step computes fbanks itself, as the dual-branch loss does).
  * Randomness is drawn once per step from an explicit key (`draw_mixup`, `draw_exchange`), and the
    construction itself (`mixup`, `exchange_labels`, `exchange_features`) is deterministic, so it can be
    tested with hand-written decisions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def partner(x: jax.Array) -> jax.Array:
  """The mixing/exchange partner of every sample: the batch reversed along axis 0."""
  return jnp.flip(x, axis=0)


def _per_sample(v: jax.Array, like: jax.Array) -> jax.Array:
  """Reshapes `v: [B]` to broadcast against `like: [B, ...]`."""
  return v.reshape(v.shape[:1] + (1,) * (like.ndim - 1))


def draw_mixup(rng: jax.Array, batch_size: int, prob: float = 0.5) -> tuple[jax.Array, jax.Array]:
  """Random mixup decisions: `(lam, apply)`, `lam: [B]` ~ U(0, 1) float32, `apply: [B]` bool with P = prob."""
  lam_rng, apply_rng = jax.random.split(rng)
  lam = jax.random.uniform(lam_rng, (batch_size,), jnp.float32)
  apply = jax.random.uniform(apply_rng, (batch_size,)) < prob
  return lam, apply


def mixup(inputs, labels: jax.Array, lam: jax.Array, apply: jax.Array):
  """Mixes every sample with its partner where `apply` is True.

  Args:
    inputs: pytree of `[B, ...]` arrays, all mixed with the same weights.
    labels: `[B, C]` (one-hot or soft).
    lam: `[B]` weight of the sample itself; `1 - lam` goes to its partner.
    apply: `[B]` bool; False keeps the sample unchanged.

  Returns:
    `(mixed_inputs, mixed_labels)` with the shapes and dtypes of the inputs.
  """
  def mix(x):
    w = _per_sample(lam, x).astype(jnp.float32)
    mixed = (w * x.astype(jnp.float32) + (1.0 - w) * partner(x).astype(jnp.float32)).astype(x.dtype)
    return jnp.where(_per_sample(apply, x), mixed, x)

  return jax.tree.map(mix, inputs), mix(labels)


def draw_exchange(rng: jax.Array, batch_size: int, prob: float = 0.5) -> jax.Array:
  """Random featex decisions `exchanged: [B]` bool, True with probability `prob`."""
  return jax.random.uniform(rng, (batch_size,)) < prob


def exchange_features(kept: jax.Array, exchanged_branch: jax.Array, exchanged: jax.Array) -> jax.Array:
  """Fused embeddings `[B, Dk + Dx]`: `concat(kept[b], x[b])`, with `x[b]` taken from the partner if exchanged.

  Args:
    kept: `[B, Dk]` embeddings of the branch that is never exchanged (BEATs).
    exchanged_branch: `[B, Dx]` embeddings of the branch that is exchanged (EAT).
    exchanged: `[B]` bool decisions.
  """
  other = jnp.where(exchanged[:, None], partner(exchanged_branch), exchanged_branch)
  return jnp.concatenate([kept, other], axis=-1)


def exchange_labels(labels: jax.Array, exchanged: jax.Array) -> jax.Array:
  """Featex labels `[B, 3L]` from `labels: [B, L]`.

  Kept samples get `[y[b], 0, 0]`; exchanged ones get `[0, y[b] / 2, y[B-1-b] / 2]`.
  """
  zeros = jnp.zeros_like(labels)
  own = jnp.concatenate([labels, zeros, zeros], axis=-1)
  swapped = jnp.concatenate([zeros, 0.5 * labels, 0.5 * partner(labels)], axis=-1)
  return jnp.where(exchanged[:, None], swapped, own)
