"""Pre-training parity with upstream EAT run here (needs ASD_JAX_UPSTREAM_EAT = a clone of cwx-worst-one/EAT).

Upstream's `Data2VecMultiModel` is built in pre-training mode (EMA teacher, CNN decoder) with the stand-ins of
`benchmarks/upstream_eat.py`, from random weights that this test perturbs (student and `_ema` teacher apart),
for configurations other than the fixture's: EAT-large's decoder and masking, top-K below the depth, and the
alternative target and loss settings. Its state_dict goes through our strict loader; both sides get the same
fbank and upstream's own masks, and ours the mask tokens upstream drew. Compared in float32: teacher targets,
student outputs at the visible patches, decoder predictions, each loss term, the logged figures, gradients
of the total loss (patch embedding, an attention block, the decoder) and one EMA update after an optimiser
step. Tolerances as in test_objective.py (1e-4 absolute for O(1) tensors, 1e-5 relative for loss sums,
1e-4 of the largest entry for gradients). The mask generator is compared statistically over many draws.
"""

import json

import jax
import numpy as np
import pytest

from asd_jax.models import eat
from asd_jax.models import eat_decoder
from asd_jax.pretraining import ema
from asd_jax.pretraining import masking
from asd_jax.pretraining import objective
from benchmarks import make_pretraining_fixture
from benchmarks import make_reference_fixtures
from benchmarks import upstream_eat
from benchmarks import upstream_pretraining

ATOL = 1e-4


def _model_cfg(variant):
  cfg = upstream_eat.pretraining_model_cfg(eat.EATConfig(depth=3, embed_dim=96, num_heads=4), decoder_kernel=5,
                                           decoder_layers=3)
  cfg.update(average_top_k_layers=2, clone_batch=4, cls_loss=1.0, instance_norm_target_layer=True,
             layer_norm_targets=True, min_target_var=0.0, min_pred_var=0.0, ema_decay=0.9998, ema_end_decay=0.99999,
             ema_anneal_end_step=100_000)
  image = cfg["modalities"]["image"]
  image.update(inverse_mask=True, mask_prob=0.75, mask_prob_adjust=0.1, mask_length=5, mask_noise_std=0.01,
               ema_local_encoder=True, target_length=160)
  if variant == "alternatives":
    cfg.update(end_of_block_targets=True, instance_norm_target_layer=False, layer_norm_target_layer=True,
               layer_norm_targets=False, instance_norm_targets=True, loss_beta=0.25, loss_scale=0.5, cls_loss=0.5,
               average_top_k_layers=3)
  return cfg


def _perturbed_upstream(upstream_dir, cfg, seed):
  import torch

  upstream = upstream_eat.import_upstream_eat(upstream_dir)
  torch.manual_seed(seed)
  model = upstream_eat.build_model(upstream, cfg, pretraining=True)
  state = model.state_dict()
  noisy = {k: v + 0.02 * torch.randn_like(v) for k, v in state.items() if k != "_ema"}
  noisy["_ema"] = {k: v + 0.02 * torch.randn_like(v) for k, v in state["_ema"].items()}
  model.load_state_dict(noisy, strict=True)
  return model, noisy


@pytest.mark.parametrize("variant", ["large_decoder", "alternatives"])
def test_objective_matches_upstream(upstream_eat_dir, variant):
  import torch

  cfg = _model_cfg(variant)
  model, state = _perturbed_upstream(upstream_eat_dir, cfg, seed=11)
  config, student, teacher, decoder = objective.from_fairseq_state_dict(state, {"model": cfg})
  assert config.decoder == eat_decoder.DecoderConfig(decoder_dim=96, decoder_kernel=5, decoder_layers=3)
  batch, frames, clones = 3, 160, 4
  fbank = np.random.default_rng(5).normal(scale=0.5, size=(batch, frames, 128)).astype(np.float32)
  image = cfg["modalities"]["image"]
  mask = upstream_pretraining.block_masks(upstream_eat_dir, batch * clones, (10, 8), mask_prob=image["mask_prob"],
                                          mask_length=5, mask_prob_adjust=image["mask_prob_adjust"], seed=3)
  torch.manual_seed(4)
  up = upstream_pretraining.step(model, fbank, mask, num_updates=0)
  noise = upstream_pretraining.mask_noise(up["decoder_input"], mask)
  assert np.abs(noise).max() > 0.01  # upstream really drew mask tokens (std 0.01)

  run = jax.jit(lambda s, t, d: objective.eat_pretraining_objective(s, t, d, fbank, mask, noise, config=config,
                                                                    num_visible=20))
  out = jax.device_get(run(student, teacher, decoder))
  figures = {}
  for name, want in (("targets", up["targets"]), ("student_cls", up["student"][:, 0]),
                     ("student_visible", upstream_pretraining.visible_in_patch_order(up["student"], up["ids_keep"])),
                     ("decoder_predictions", up["decoder_predictions"])):
    figures[name] = float(np.abs(out[name] - want).max())
    np.testing.assert_allclose(out[name], want, atol=ATOL, err_msg=name)
  for name in ("regression_sum", "cls_sum", "sample_size"):
    np.testing.assert_allclose(out[name], up[name], rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(out["loss"], up["loss_sum"] / up["sample_size"], rtol=1e-5)
  for name in ("pred_var", "target_var", "masked_pct"):
    np.testing.assert_allclose(out[name], up[name], rtol=1e-5, err_msg=name)
  assert up["ema_decay"] == 1000 * 0.9998

  # Gradients of the total loss; fairseq divides upstream's by the sample size before the optimiser.
  grads = jax.device_get(jax.jit(jax.grad(lambda s, d: objective.eat_pretraining_objective(
      s, teacher, d, fbank, mask, noise, config=config, num_visible=20)["loss"], argnums=(0, 1)))(student, decoder))
  mine = {**eat.to_fairseq_state_dict(grads[0], config.encoder),
          **eat_decoder.to_state_dict(grads[1], config.decoder, prefix=eat.FAIRSEQ_DECODER_PREFIX)}
  checked = ["modality_encoders.IMAGE.local_encoder.proj.weight", "modality_encoders.IMAGE.extra_tokens",
             "blocks.1.attn.qkv.weight", "blocks.1.attn.proj.weight", "blocks.1.mlp.fc1.weight",
             "modality_encoders.IMAGE.decoder.blocks.0.0.weight", "modality_encoders.IMAGE.decoder.proj.weight"]
  for name in checked:
    want = up["grads"][name] / up["sample_size"]
    figures[f"grad {name}"] = float(np.abs(mine[name] - want).max() / np.abs(want).max())
    np.testing.assert_allclose(mine[name], want, atol=1e-4 * np.abs(want).max(), err_msg=name)
  print(json.dumps({variant: figures}, indent=1))

  # One optimiser step on upstream's student, then upstream's EMA step (decay(1)) towards it.
  optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
  optimiser.step()
  stepped = upstream_pretraining.student_state(model)
  model.set_num_updates(1)
  want = upstream_pretraining.teacher_state(model)
  moved_student = objective.from_fairseq_state_dict({**stepped, "_ema": want}, {"model": cfg}).student
  moved = eat.to_fairseq_state_dict(
      jax.device_get(ema.update(teacher, moved_student, ema.one_minus_decay(config.ema, 1))), config.encoder)
  assert set(moved) == set(want)
  for name in want:
    np.testing.assert_allclose(moved[name], want[name], atol=1e-6, rtol=1e-6, err_msg=name)
  positions = "modality_encoders.IMAGE.fixed_positional_encoder.positions"
  np.testing.assert_array_equal(moved[positions], stepped[positions])  # copied, not averaged


def test_fixture_is_what_the_script_makes(upstream_eat_dir, fixtures):
  """The committed default-suite fixture is reproduced by its generator (same seeds, upstream's code): masks and
  metadata exactly, float arrays to the rounding of float32 kernels (`make_reference_fixtures.REGENERATED_RTOL`)."""
  made = make_pretraining_fixture.make(upstream_eat_dir, fixtures)
  stored = np.load(fixtures / make_pretraining_fixture.FILE)
  assert sorted(made) == sorted(stored.files)
  np.testing.assert_array_equal(made["mask"], stored["mask"])
  np.testing.assert_array_equal(made["about"], stored["about"])
  for name in stored.files:
    assert make_reference_fixtures.relative_difference(np.asarray(made[name]), stored[name]) <= \
        make_reference_fixtures.REGENERATED_RTOL, name


def _statistics(masks, grid):
  """Per draw: visible-patch 4-neighbour pairs and 4-connected visible components; per patch: visible rate."""
  from scipy import ndimage

  visible = ~masks.reshape(-1, *grid)
  pairs = (visible[:, 1:] & visible[:, :-1]).sum((1, 2)) + (visible[:, :, 1:] & visible[:, :, :-1]).sum((1, 2))
  components = np.array([ndimage.label(v)[1] for v in visible])
  return pairs, components, visible.reshape(len(visible), -1).mean(0)


@pytest.mark.parametrize("config,grid", [(masking.MaskConfig(), (64, 8)),
                                         (masking.MaskConfig(mask_prob=0.75, mask_prob_adjust=0.1), (64, 8)),
                                         (masking.MaskConfig(), (13, 8))])
def test_mask_generator_statistics_match_upstream(upstream_eat_dir, config, grid):
  """Same masked count in every view; same block structure and per-patch rates over 3000 draws each.

  Means are compared within 5 standard errors of their difference (a false alarm ~6e-7 per comparison; the
  per-patch rates, up to 512 comparisons, within 5.5).
  """
  draws = 3000
  theirs = upstream_pretraining.block_masks(upstream_eat_dir, draws, grid, mask_prob=config.mask_prob,
                                            mask_length=config.mask_length, mask_prob_adjust=config.mask_prob_adjust,
                                            seed=0) != 0
  ours = masking.numpy_block_mask(0, draws, grid, config)
  patches = grid[0] * grid[1]
  assert set(theirs.sum(1)) == set(ours.sum(1)) == {config.num_masked(patches)}
  stats_theirs, stats_ours = _statistics(theirs, grid), _statistics(ours, grid)
  summary = {}
  for name, a, b in (("neighbour pairs", stats_theirs[0], stats_ours[0]), ("components", stats_theirs[1], stats_ours[1])):
    error = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    summary[name] = (float(a.mean()), float(b.mean()), float(error))
    assert abs(a.mean() - b.mean()) < 5 * error, (name, a.mean(), b.mean(), error)
  rate_theirs, rate_ours = stats_theirs[2], stats_ours[2]
  pooled = (rate_theirs + rate_ours) / 2
  error = np.sqrt(pooled * (1 - pooled) * 2 / draws)
  assert np.all(np.abs(rate_theirs - rate_ours) < 5.5 * np.maximum(error, 1e-3))
  # Block structure shows in the rates: patches at the frequency edges are kept less often than inner ones.
  edge, inner = rate_ours.reshape(grid)[:, [0, -1]].mean(), rate_ours.reshape(grid)[:, 3:5].mean()
  assert edge < inner and rate_theirs.reshape(grid)[:, [0, -1]].mean() < rate_theirs.reshape(grid)[:, 3:5].mean()
  print(json.dumps({f"{grid} {config.mask_prob}": summary}))
