"""EAT's padding of short clips: the fbank of a zero-padded batch row equals the fbank of the clip alone.

The reference is `fbank.fbank` of each unpadded clip (the front end that the fixture tests tie to
torchaudio's Kaldi fbank), which pads with zero log-mel frames as upstream EAT does. The two differ only
in how the clip mean is computed (a masked sum over the padded row / n vs. a mean over the clip): a
float32 rounding difference of the order of eps * |x|, which the per-frame DC removal takes out again,
so the log-mel values agree to float32 rounding of the FFT and the log (|x| ~ 1e1 there, eps ~ 1e-7,
amplified in low-energy bins): 1e-4 absolute on normalised values of order 1.
"""

import dataclasses

import numpy as np
import pytest

from asd_jax.audio import fbank as fb
from asd_jax.audio import padded_fbank

SMALL_EAT = dataclasses.replace(fb.EAT_FBANK, target_length=96)  # ~0.96 s, keeps the test fast


@pytest.mark.parametrize("config", [SMALL_EAT, dataclasses.replace(fb.BEATS_FBANK, target_length=None)],
                         ids=["eat", "beats-no-target"])
def test_padded_rows_equal_the_clips_alone(config):
  rng = np.random.default_rng(0)
  samples = 12000
  lengths = [400, 401, 9999, samples]  # one frame, one frame + 1 sample, a longer clip, a full row
  clips = [(0.1 * rng.standard_normal(n) + 0.05).astype(np.float32) for n in lengths]  # a DC offset too
  wav = np.stack([np.pad(c, (0, samples - c.size), constant_values=7.0) for c in clips])  # junk past the end
  got = np.asarray(padded_fbank.fbank_of_padded(wav, np.array(lengths), config))
  for row, clip in enumerate(clips):
    alone = np.asarray(fb.fbank(clip[None], config))[0]
    frames = alone.shape[0]
    np.testing.assert_allclose(got[row, :frames], alone, atol=1e-4)
    if config.target_length is None:  # no target: frames past the clip are zero log-mel frames, normalised
      np.testing.assert_allclose(got[row, frames:], -config.norm_mean / (2 * config.norm_std), rtol=1e-6)


def test_a_row_shorter_than_one_window_is_all_padding():
  wav = np.zeros((1, 8000), np.float32)
  wav[0, :100] = 0.3
  got = np.asarray(padded_fbank.fbank_of_padded(wav, np.array([100]), SMALL_EAT))
  np.testing.assert_allclose(got, -SMALL_EAT.norm_mean / (2 * SMALL_EAT.norm_std), rtol=1e-6)
  assert got.shape == (1, 96, 128)
