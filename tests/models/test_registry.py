"""The encoder registry's front ends: EAT's frames per clip (`model.eat_target_length`)."""

import numpy as np

from asd_jax.audio import fbank
from asd_jax.models import networks
from asd_jax.models import registry
from configs import feat


def test_eat_target_length_pads_to_1024_by_default_and_to_the_clip_with_0():
  wav = np.random.default_rng(0).normal(scale=0.1, size=(2, 32000)).astype(np.float32)  # 2 s: 198 frames
  entry = registry.get("eat")
  upstream = np.asarray(fbank.fbank(wav, config=fbank.EAT_FBANK))  # 1024 frames, zero log-mel frames after 198
  default = np.asarray(entry.frontend(**networks.frontend_options(feat.get_config().model, "eat"))(wav))
  np.testing.assert_array_equal(default, upstream)
  clip = np.asarray(entry.frontend(target_length=0)(wav))
  assert clip.shape == (2, 208, 128)  # 198 rounded up to a 16-frame patch
  # The same computation, stopped earlier: the first 208 of upstream's frames. Only the padding differs in
  # length, so equal up to the float32 rounding of one fbank evaluation (relative 1e-6 of the values' range).
  np.testing.assert_allclose(clip, upstream[:, :208], rtol=0, atol=1e-6 * np.abs(upstream).max())
  np.testing.assert_array_equal(np.asarray(entry.frontend(target_length=300)(wav)).shape, (2, 300, 128))


def test_beats_has_no_target_length():
  wav = np.zeros((1, 16000), np.float32)
  frames = np.asarray(registry.get("beats").frontend(**networks.frontend_options(feat.get_config().model, "beats"))(wav))
  assert frames.shape[1] == fbank.BEATS_FBANK.num_frames(16000)
