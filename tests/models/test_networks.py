"""The encoders' front ends (`networks.ENCODERS`): EAT's frames per clip (`model.eat_target_length`)."""

import ml_collections
import numpy as np
import pytest

from asd_jax.audio import fbank
from asd_jax.models import networks
from configs import common
from configs import feat


def test_eat_target_length_pads_to_1024_by_default_and_to_the_clip_with_0():
  wav = np.random.default_rng(0).normal(scale=0.1, size=(2, 32000)).astype(np.float32)  # 2 s: 198 frames
  upstream = np.asarray(fbank.fbank(wav, config=fbank.EAT_FBANK))  # 1024 frames, zero log-mel frames after 198
  default = np.asarray(networks.encoder_frontend("eat", feat.get_config().model)(wav))
  np.testing.assert_array_equal(default, upstream)
  clip = np.asarray(networks.eat_fbank(wav, target_length=0))
  assert clip.shape == (2, 208, 128)  # 198 rounded up to a 16-frame patch
  # The same computation, stopped earlier: the first 208 of upstream's frames. Only the padding differs in
  # length, so equal up to the float32 rounding of one fbank evaluation (relative 1e-6 of the values' range).
  np.testing.assert_allclose(clip, upstream[:, :208], rtol=0, atol=1e-6 * np.abs(upstream).max())
  np.testing.assert_array_equal(np.asarray(networks.eat_fbank(wav, target_length=300)).shape, (2, 300, 128))


def test_beats_has_no_target_length():
  wav = np.zeros((1, 16000), np.float32)
  frames = np.asarray(networks.encoder_frontend("beats", feat.get_config().model)(wav))
  assert frames.shape[1] == fbank.BEATS_FBANK.num_frames(16000)


def test_every_network_name_builds_and_old_or_unknown_names_are_one_clear_error():
  config = common.get_config()
  config.model.preset, config.data.clip_seconds = "tiny", 0.5
  for name in ("beats", "eat", "log_mel_stats"):
    config.model.network = name
    assert networks.build_network(config, 3).name == name
  config.model.network = "whisper"
  with pytest.raises(ValueError, match=r"unknown network 'whisper' \(config.model.network\); known: \['beats', "
                     r"'dual_branch', 'eat', 'log_mel_stats'\]"):
    networks.build_network(config, 3)
  old = config.to_dict()
  old["model"]["encoder"] = old["model"].pop("network")  # a config.json written before the rename
  with pytest.raises(ValueError, match="config.model.encoder='whisper': that field is now config.model.network"):
    networks.build_network(ml_collections.ConfigDict(old), 3)


def test_loss_num_subclusters_gives_the_classifier_k_centres_per_class():
  import jax
  config = common.get_config()
  config.model.preset, config.data.clip_seconds, config.model.network = "tiny", 0.5, "eat"
  config.loss.num_subclusters = 3
  network = networks.build_network(config, 5)
  params, extra = network.init(jax.random.key(0))
  dim = params["head"]["kernel"].shape[0]
  assert params["head"]["kernel"].shape == (dim, 15)
  wav = np.random.default_rng(1).normal(scale=0.1, size=(2, 8000)).astype(np.float32)
  assert network.class_scores(params, extra, wav).shape == (2, 5)  # one cosine per class
  loss, _ = network.loss(params, extra, {"wav": wav, "label": np.array([0, 4])}, jax.random.key(2))
  assert np.isfinite(float(loss))
