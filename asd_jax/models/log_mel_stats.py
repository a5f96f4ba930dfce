"""A non-learned reference: each clip's log-mel fbank summarised by its mean and standard deviation over time.

No parameters and no training. Scored with the same SMOTE + cosine 1-NN path as the learned models, it says
how far plain spectral statistics go on a dataset, the floor that fine-tuned encoders must clear (DCASE
papers show such baselines next to their systems). The front end is the Kaldi fbank with BEATs' settings
(`asd_jax.audio.fbank.BEATS_FBANK`: 128 mel bins, 25 ms / 10 ms, normalised by BEATs' constants); the
normalisation is affine, so it only shifts and scales the statistics.

Outputs (the contract of `asd_jax.models.networks.Network.outputs`):
  embedding         [batch, 2 * mel]   concat(mean over frames, std over frames)
  layer_embeddings  [batch, 2, mel]    with `all_layers`: mean and std as two "layers", so the scorer's
                                       per-layer normalisation (`layers="all"`) weighs them equally
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from asd_jax.audio import fbank as fbank_lib

FBANK = fbank_lib.BEATS_FBANK


def statistics(wav: jax.Array) -> jax.Array:
  """`wav [batch, samples]` -> `[batch, 2, mel]`: mean and standard deviation of the log-mel frames over time."""
  frames = fbank_lib.fbank(wav.astype(jnp.float32), FBANK)  # [batch, frames, mel]
  return jnp.stack([jnp.mean(frames, axis=1), jnp.std(frames, axis=1)], axis=1)


def outputs(params: Any, wav: jax.Array, all_layers: bool) -> dict[str, jax.Array]:
  """See the module docstring; `params` is the empty tree (there are none)."""
  del params
  stats = statistics(wav)
  out = {"embedding": stats.reshape(stats.shape[0], -1)}
  if all_layers:
    out["layer_embeddings"] = stats
  return out


def describe() -> dict[str, Any]:
  """JSON-able description (stored like an encoder architecture)."""
  return {"features": "log-mel mean and std over time", "num_mel_bins": FBANK.num_mel_bins,
          "frame_length_ms": FBANK.frame_length_ms, "frame_shift_ms": FBANK.frame_shift_ms}
