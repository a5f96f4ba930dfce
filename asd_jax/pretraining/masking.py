"""Inverse block masking of EAT's 2-D patch grid, jittable (the student's masked views of a clip).

EAT (like data2vec 2.0 for images) chooses, per view, the patches the student *keeps*: square blocks of
`mask_length x mask_length` patches around random centres on the `[time patches, freq patches]` grid, cut
at the grid's edges; then it keeps or drops uniformly chosen patches until exactly
`int(patches * (1 - mask_prob))` are kept, and masks all the others ("inverse" masking: the blocks are what
stays visible). With `inverse_mask=False` the blocks are what is masked, to `int(patches * mask_prob)`.
Upstream's generator is `compute_block_mask_2d` (EAT `utils/data_utils.py`, run in the data loader); this is
the same algorithm in JAX with another random stream:

1. `centres = int(patches * ((p + mask_prob_adjust) / mask_length**2) * (1 + mask_dropout))` draws of a
   patch index, uniform with replacement, where p = 1 - mask_prob (inverse) or mask_prob; repeated draws
   count once.
2. Every centre (t, f) selects the patches (t + i, f + j), i, j in [-(mask_length // 2),
   mask_length - 1 - mask_length // 2], that lie on the grid.
3. With n selected and target k = int(patches * p): n > k drops n - k selected patches, n < k adds k - n
   unselected ones, each set chosen uniformly at random (here: the top k of "selected + uniform noise").
4. The mask is `True` on masked patches: the unselected ones (inverse), or the selected ones.

Mask convention (upstream's `precomputed_mask`): `[views, patches]` bool, True = masked, patch index
p = t * freq_patches + f (time-major, as the encoder's tokens); every view masks the same number of patches.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskConfig:
  """Block-mask settings (upstream `modalities.image.*`; defaults: `config/pretraining_AS2M.yaml`).

  EAT-large (`pretraining_AS2M_large.yaml`) uses mask_prob 0.75 and mask_prob_adjust 0.1.
  """

  mask_prob: float = 0.8
  mask_length: int = 5
  mask_prob_adjust: float = 0.07
  inverse_mask: bool = True
  mask_dropout: float = 0.0

  def __post_init__(self):
    if self.mask_length < 2:
      raise ValueError(f"block masking needs mask_length >= 2, got {self.mask_length} (upstream switches to "
                       "random per-patch masking for 1, which this project does not implement)")
    if not 0.0 < self.mask_prob < 1.0:
      raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")

  def _selected_prob(self) -> float:
    # Same float expression as upstream (1 - 0.8 is 0.19999999999999996), so the integer counts agree.
    return 1 - self.mask_prob if self.inverse_mask else self.mask_prob

  def num_centres(self, patches: int) -> int:
    """Block centres drawn per view (before repeats collapse)."""
    p = self._selected_prob()
    return int(patches * ((p + self.mask_prob_adjust) / self.mask_length ** 2) * (1 + self.mask_dropout))

  def num_selected(self, patches: int) -> int:
    """Patches in the blocks after the count adjustment (kept ones for inverse masking)."""
    return int(patches * self._selected_prob())

  def num_masked(self, patches: int) -> int:
    """Masked patches per view: 410 of 512 for EAT-base at 10 s, 384 of 512 for EAT-large."""
    k = self.num_selected(patches)
    return patches - k if self.inverse_mask else k

  def num_visible(self, patches: int) -> int:
    """Patches the student sees per view (plus its CLS token)."""
    return patches - self.num_masked(patches)


def select_blocks(draws: jax.Array, grid: tuple[int, int], length: int) -> jax.Array:
  """`[views, patches]` bool: the patches within a `length` block of any drawn centre (`draws [views, n]`
  patch indices, repeats allowed), cut at the grid's edges (steps 1-2)."""
  views = draws.shape[0]
  time, freq = grid
  centres = jnp.zeros((views, time * freq), bool).at[jnp.arange(views)[:, None], draws].set(True)
  before = length // 2  # block offsets run from -before to length - 1 - before
  # Output (t, f) is selected iff some centre lies in [t - (length - 1 - before), t + before] (same for f).
  padding = ((0, 0), (length - 1 - before, before), (length - 1 - before, before))
  selected = jax.lax.reduce_window(centres.reshape(views, time, freq), False, jax.lax.bitwise_or,
                                   (1, length, length), (1, 1, 1), padding)
  return selected.reshape(views, time * freq)


def adjust_count(selected: jax.Array, noise: jax.Array, count: int) -> jax.Array:
  """Exactly `count` patches per view (step 3): a uniformly random `count` of the selected ones if there are
  more, else all of them plus a uniformly random rest; `noise [views, patches]` is U(0, 1)."""
  _, chosen = jax.lax.top_k(selected.astype(jnp.float32) * 2.0 + noise, count)
  views, patches = selected.shape
  return jnp.zeros((views, patches), bool).at[jnp.arange(views)[:, None], chosen].set(True)


def block_mask(rng: jax.Array, views: int, grid: tuple[int, int], config: MaskConfig = MaskConfig()) -> jax.Array:
  """`[views, time * freq]` bool masks (True = masked) for a `grid = (time patches, freq patches)`.

  Jittable (`views`, `grid` and `config` are static); each view is independent.
  """
  patches = grid[0] * grid[1]
  centre_rng, adjust_rng = jax.random.split(rng)
  draws = jax.random.randint(centre_rng, (views, config.num_centres(patches)), 0, patches)
  selected = select_blocks(draws, grid, config.mask_length)
  final = adjust_count(selected, jax.random.uniform(adjust_rng, (views, patches)), config.num_selected(patches))
  return ~final if config.inverse_mask else final


def numpy_block_mask(seed: int, views: int, grid: tuple[int, int], config: MaskConfig = MaskConfig()) -> np.ndarray:
  """`block_mask` on the host: `[views, patches]` bool NumPy (e.g. for data-loader side masking)."""
  with jax.default_device(jax.devices("cpu")[0]):
    return np.asarray(jax.jit(block_mask, static_argnums=(1, 2, 3))(jax.random.key(seed), views, grid, config))
