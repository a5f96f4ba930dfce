"""Fine-tuning augmentation: SpecAugment-style band masks, and mixup and masks inside the ArcFace classifier loss,
each against the same computation written out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from asd_jax.audio import augment
from asd_jax.models import arcface
from asd_jax.models import classifier
from asd_jax.models import featex


def _runs(row):
  """[(start, stop)] of the True runs of a 1-D bool array."""
  padded = np.concatenate([[False], row, [False]]).astype(int)
  edges = np.flatnonzero(np.diff(padded))
  return list(zip(edges[::2], edges[1::2]))


def test_band_masks_are_at_most_count_bands_of_at_most_max_width():
  masks = np.asarray(augment.band_mask(jax.random.key(0), 500, 40, count=2, max_width=6))
  for row in masks:
    runs = _runs(row)
    assert len(runs) <= 2
    assert sum(stop - start for start, stop in runs) <= 12 and all(stop - start <= 12 for start, stop in runs)
  # Two overlapping or touching bands make one run of up to 12; one band alone is at most 6 wide.
  single = np.asarray(augment.band_mask(jax.random.key(1), 500, 40, count=1, max_width=6))
  assert max(stop - start for row in single for start, stop in _runs(row)) == 6
  # Width ~ U{0..6}: the mean hidden fraction of one band is 3 / 40 (standard error ~0.02 / sqrt(2000)).
  many = np.asarray(augment.band_mask(jax.random.key(2), 2000, 40, count=1, max_width=6))
  assert abs(many.mean() - 3 / 40) < 0.005
  # Every start position where a band fits is used, the last ones included.
  assert many[:, -1].any() and many[:, 0].any()
  assert not np.asarray(augment.band_mask(jax.random.key(0), 4, 40, count=0, max_width=6)).any()
  assert not np.asarray(augment.band_mask(jax.random.key(0), 4, 40, count=3, max_width=0)).any()


def test_mask_bands_zeroes_whole_frames_and_whole_mel_bins_only():
  fbank = jnp.asarray(np.random.default_rng(0).normal(size=(8, 50, 16)) + 5.0, jnp.float32)  # no zeros
  out = np.asarray(augment.mask_bands(jax.random.key(3), fbank, time_masks=2, time_width=10, freq_masks=1,
                                      freq_width=4))
  hidden = out == 0
  kept = ~hidden
  np.testing.assert_array_equal(out[kept], np.asarray(fbank)[kept])
  rows, cols = hidden.all(axis=2), hidden.all(axis=1)  # [8, 50] frames, [8, 16] mel bins fully hidden
  np.testing.assert_array_equal(hidden, rows[:, :, None] | cols[:, None, :])
  assert rows.any() and cols.any()
  assert not np.array_equal(rows[0], rows[1])  # drawn per clip
  same = augment.mask_bands(jax.random.key(3), fbank, time_masks=2, time_width=10, freq_masks=1, freq_width=4)
  np.testing.assert_array_equal(np.asarray(same), out)  # the key alone decides


@pytest.fixture
def tiny_classifier(tiny_encoder, frontend):
  model = classifier.Classifier(encoder=tiny_encoder(dim=16, heads=2, layers=1, dropout=0.0), num_classes=3,
                                frontend=frontend, dropout_rate=0.0)
  wav = jnp.asarray(np.random.default_rng(1).normal(size=(6, 1024)), jnp.float32)
  params = model.init(jax.random.key(0), wav)["params"]
  batch = {"wav": wav, "label": jnp.array([0, 1, 2, 2, 1, 0])}
  return model, params, batch


def test_without_augmentation_the_loss_is_plain_arcface(tiny_classifier):
  model, params, batch = tiny_classifier
  loss, (metrics, _) = classifier.classification_loss(params, {}, batch, jax.random.key(5), model=model)
  cosine = model.apply({"params": params}, batch["wav"])["cosine"]
  np.testing.assert_allclose(loss, arcface.arcface_loss(cosine, batch["label"]), rtol=1e-6)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(np.argmax(cosine, -1) == np.asarray(batch["label"])))


def test_mixup_loss_weighs_both_labels_by_the_mixing_weight(tiny_classifier):
  model, params, batch = tiny_classifier
  rng = jax.random.key(7)
  loss, (metrics, _) = classifier.classification_loss(params, {}, batch, rng, model=model, mixup_prob=0.5)
  lam, apply = featex.draw_mixup(jax.random.fold_in(rng, 1), 6, 0.5)
  assert 0 < int(np.sum(apply)) < 6  # some clips mixed, some not: both paths are checked
  w = np.where(np.asarray(apply), np.asarray(lam), 1.0)
  wav = np.asarray(batch["wav"])
  mixed = w[:, None] * wav + (1 - w[:, None]) * wav[::-1]
  cosine = model.apply({"params": params}, jnp.asarray(mixed))["cosine"]
  y = np.asarray(batch["label"])

  def ce(labels):
    logits = arcface.arcface_logits(cosine, jnp.asarray(labels))
    return np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(labels)))

  np.testing.assert_allclose(loss, np.mean(w * ce(y) + (1 - w) * ce(y[::-1])), rtol=1e-5)
  predicted = np.argmax(np.asarray(cosine), -1)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(w * (predicted == y) + (1 - w) * (predicted == y[::-1])),
                             rtol=1e-6)
  # A padded partner is never mixed in: with the last clip invalid, its partner (the first) keeps its own wav.
  valid = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
  padded_loss, _ = classifier.classification_loss(params, {}, {**batch, "valid": valid}, rng, model=model,
                                                  mixup_prob=1.0)
  lam1, _ = featex.draw_mixup(jax.random.fold_in(rng, 1), 6, 1.0)
  w1 = np.asarray(lam1).copy()
  w1[0] = 1.0
  cosine1 = model.apply({"params": params}, jnp.asarray(w1[:, None] * wav + (1 - w1[:, None]) * wav[::-1]))["cosine"]
  logits = lambda labels: arcface.arcface_logits(cosine1, jnp.asarray(labels))  # noqa: E731
  per = (w1 * np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits(y), jnp.asarray(y)))
         + (1 - w1) * np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits(y[::-1]), jnp.asarray(y[::-1]))))
  np.testing.assert_allclose(padded_loss, np.sum(per * np.asarray(valid)) / 5, rtol=1e-5)


def test_masks_hide_bands_of_the_fbank_the_encoder_sees(tiny_classifier, frontend):
  model, params, batch = tiny_classifier
  rng = jax.random.key(11)
  masks = {"time_masks": 1, "time_width": 3, "freq_masks": 1, "freq_width": 2}
  loss, _ = classifier.classification_loss(params, {}, batch, rng, model=model, masks=masks)
  fbank = augment.mask_bands(jax.random.fold_in(rng, 2), frontend(batch["wav"]), **masks)
  cosine = model.clone(frontend=None).apply({"params": params}, fbank)["cosine"]
  np.testing.assert_allclose(loss, arcface.arcface_loss(cosine, batch["label"]), rtol=1e-6)
  plain, _ = classifier.classification_loss(params, {}, batch, rng, model=model)
  assert abs(float(loss) - float(plain)) > 1e-6  # the masks changed what the encoder saw
