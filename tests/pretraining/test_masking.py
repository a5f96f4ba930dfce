"""The inverse block-mask generator: exact counts, exact block construction, exact count adjustment.

Its statistics against upstream's own `compute_block_mask_2d` are in test_upstream_pretraining.py (needs a
clone of upstream EAT); here every check is exact or against a brute-force NumPy construction written
from upstream's description (centres, then offsets -length//2 .. length-1-length//2 clamped to the grid).
"""

import itertools

import jax
import numpy as np
import pytest

from asd_jax.pretraining import masking

BASE = masking.MaskConfig()
LARGE = masking.MaskConfig(mask_prob=0.75, mask_prob_adjust=0.1)


def test_counts_follow_upstreams_integer_arithmetic():
  # 10 s clips: 64 x 8 patches. int(512 * 0.19999999999999996) = 102 kept, 5 centres of 5 x 5 blocks.
  assert (BASE.num_centres(512), BASE.num_selected(512), BASE.num_masked(512), BASE.num_visible(512)) == (5, 102, 410, 102)
  assert (LARGE.num_centres(512), LARGE.num_masked(512)) == (7, 384)
  assert BASE.num_masked(104) == 104 - int(104 * (1 - 0.8))
  plain = masking.MaskConfig(inverse_mask=False, mask_prob=0.6, mask_prob_adjust=0.0)
  assert plain.num_masked(100) == 60 and plain.num_centres(100) == int(100 * (0.6 / 25))
  with pytest.raises(ValueError, match="mask_length >= 2"):
    masking.MaskConfig(mask_length=1)


@pytest.mark.parametrize("config,grid", [(BASE, (64, 8)), (LARGE, (64, 8)), (BASE, (13, 8)),
                                         (masking.MaskConfig(inverse_mask=False, mask_prob=0.5), (25, 8))])
def test_every_view_masks_the_configured_count(config, grid):
  mask = masking.numpy_block_mask(0, 40, grid, config)
  patches = grid[0] * grid[1]
  assert mask.shape == (40, patches) and mask.dtype == bool
  np.testing.assert_array_equal(mask.sum(axis=1), config.num_masked(patches))
  # Independent views (on short grids, with one 5 x 4 block of exactly the kept count, two may coincide).
  assert len({row.tobytes() for row in mask}) > 30


def _blocks_by_hand(draws, grid, length):
  time, freq = grid
  out = np.zeros((len(draws), time * freq), bool)
  offset = length // 2
  for view, centres in enumerate(draws):
    for centre in centres:
      t, f = divmod(int(centre), freq)
      for i, j in itertools.product(range(length), repeat=2):
        out[view, min(max(t + i - offset, 0), time - 1) * freq + min(max(f + j - offset, 0), freq - 1)] = True
  return out


@pytest.mark.parametrize("length", [5, 4, 3])
def test_blocks_are_upstreams_clamped_squares(length):
  rng = np.random.default_rng(length)
  grid = (11, 8)
  draws = rng.integers(0, 88, size=(30, 4))
  draws[0] = [0, 7, 80, 87]  # the corners: blocks cut at both edges
  got = np.asarray(masking.select_blocks(jax.numpy.asarray(draws), grid, length))
  np.testing.assert_array_equal(got, _blocks_by_hand(draws, grid, length))


def test_count_adjustment_keeps_or_extends_the_blocks_uniformly():
  rng = np.random.default_rng(0)
  selected = rng.random((2000, 30)) < 0.3
  noise = rng.random((2000, 30)).astype(np.float32)
  final = np.asarray(masking.adjust_count(selected, noise, 9))
  assert np.all(final.sum(1) == 9)
  more = selected.sum(1) >= 9
  assert np.all(final[more] <= selected[more]) and np.all(final[~more] >= selected[~more])
  # Uniform choice: among views with 12 selected patches, each selected one survives 9/12 of the time.
  twelve = selected.sum(1) == 12
  survival = final[twelve].sum() / selected[twelve].sum()
  assert abs(survival - 0.75) < 1e-12  # exact: 9 of 12 survive in every such view
  position = (final & selected)[twelve].sum(0) / np.maximum(selected[twelve].sum(0), 1)
  assert np.all(np.abs(position - 0.75) < 0.2)


def test_kept_patches_form_blocks():
  """Visible patches cluster: most have a visible 4-neighbour (uniformly random ones would rarely)."""
  mask = masking.numpy_block_mask(1, 200, (64, 8), BASE)
  visible = ~mask.reshape(200, 64, 8)
  padded = np.pad(visible, ((0, 0), (1, 1), (1, 1)))
  neighbour = padded[:, :-2, 1:-1] | padded[:, 2:, 1:-1] | padded[:, 1:-1, :-2] | padded[:, 1:-1, 2:]
  assert (visible & neighbour).sum() / visible.sum() > 0.7
  random = np.random.default_rng(0).permuted(np.tile(np.arange(512) < 102, (200, 1)), axis=1).reshape(200, 64, 8)
  padded = np.pad(random, ((0, 0), (1, 1), (1, 1)))
  neighbour = padded[:, :-2, 1:-1] | padded[:, 2:, 1:-1] | padded[:, 1:-1, :-2] | padded[:, 1:-1, 2:]
  assert (random & neighbour).sum() / random.sum() < 0.7
