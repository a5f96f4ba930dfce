r"""Side by side on CPU: one EAT pre-training step of upstream PyTorch EAT vs this JAX step, same weights,
batch and masks.

  python -m benchmarks.pretrain_side_by_side --upstream_eat=/path/to/your/clone/of/EAT \
      [--batch=2] [--seconds=2] [--clone_batch=16] [--layers=12] [--repeats=3] [--output=BENCHMARKS.md]

Upstream's `Data2VecMultiModel` is built in pre-training mode (EMA teacher, CNN decoder) in the EAT-base
layout with random weights (`benchmarks/upstream_pretraining.py`, stand-ins for fairseq / timm / omegaconf)
and converted by our strict loader (`objective.from_fairseq_state_dict`). Both sides get the same
normalised fbank and upstream's `compute_block_mask_2d` masks (`clone_batch` views per clip). A step is
what each trainer does per update:
- PyTorch (eager, float32): `set_num_updates` (the EMA step towards the student, from the second step on),
  forward, the criterion's sum of the losses, backward, gradients divided by the sample size, clipping at
  norm 4, AdamW (0.9, 0.95, weight decay 0.05 on matrices only; fairseq's Adam is AdamW);
- JAX (float32, one jitted call): the one train step (`asd_jax.training.train_step.make_train_step`) over
  `asd_jax.pretraining.loss.objective_loss` and `update_teacher`: objective, gradients, clipping, AdamW
  (`training.optimizer`, the trainer's), EMA. Mask tokens are upstream's of the first step.
The fbank front end is outside both. Timing alternates between the two. The loss difference is of the
first step (same weights, masks and mask tokens). Results go into the `pretrain_side_by_side` section of
BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import sys
import time

import numpy as np
from absl import flags


def compare(upstream_dir: str, *, batch: int, seconds: float, clone_batch: int, layers: int, repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import ml_collections
  import torch

  from asd_jax.audio import fbank as fb
  from asd_jax.models import eat
  from asd_jax.pretraining import loss as loss_lib
  from asd_jax.pretraining import objective
  from asd_jax.training import optimizer
  from asd_jax.training import train_step as ts
  from benchmarks import common
  from benchmarks import side_by_side
  from benchmarks import upstream_eat
  from benchmarks import upstream_pretraining
  from configs import pretrain_eat_base

  frames = side_by_side.eat_fbank_frames(seconds)
  grid = (frames // 16, 8)
  config = dataclasses.replace(eat.EAT_BASE, depth=layers)
  model_cfg = upstream_eat.pretraining_model_cfg(config)
  model_cfg.update(clone_batch=clone_batch, cls_loss=1.0, instance_norm_target_layer=True, layer_norm_targets=True,
                   min_target_var=0.0, min_pred_var=0.0, ema_decay=0.9998, ema_end_decay=0.99999,
                   ema_anneal_end_step=100_000)
  model_cfg["modalities"]["image"].update(inverse_mask=True, mask_prob=0.8, mask_prob_adjust=0.07, mask_length=5,
                                          mask_noise_std=0.01, ema_local_encoder=True, target_length=frames)
  upstream = upstream_eat.import_upstream_eat(upstream_dir)
  torch.manual_seed(0)
  model = upstream_eat.build_model(upstream, model_cfg, pretraining=True)
  state_dict = model.state_dict()
  settings, student, teacher, decoder = objective.from_fairseq_state_dict(state_dict, {"model": model_cfg})

  rng = np.random.default_rng(0)
  wav = (0.1 * rng.standard_normal((batch, int(seconds * 16000)))).astype(np.float32)
  fbank = np.asarray(jax.jit(lambda w: fb.fbank(w, dataclasses.replace(fb.EAT_FBANK, target_length=frames)))(wav))
  mask = upstream_pretraining.block_masks(upstream_dir, batch * clone_batch, grid, mask_prob=0.8, mask_length=5,
                                          mask_prob_adjust=0.07, seed=0)
  num_visible = int(mask.shape[1] - mask[0].sum())

  # PyTorch: fairseq's update with AdamW standing in for fairseq's Adam (decoupled decay, same groups).
  trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
  groups = [{"params": [p for n, p in trained if p.ndim > 1 and not n.endswith(".bias")], "weight_decay": 0.05},
            {"params": [p for n, p in trained if p.ndim <= 1 or n.endswith(".bias")], "weight_decay": 0.0}]
  torch_opt = torch.optim.AdamW(groups, lr=5e-4, betas=(0.9, 0.95), eps=1e-8)
  source = torch.from_numpy(fbank)[:, None]
  precomputed = torch.from_numpy(mask)
  updates = {"n": 0}

  def torch_step():
    model.set_num_updates(updates["n"])
    torch_opt.zero_grad(set_to_none=True)
    result = model(source, precomputed_mask=precomputed)
    loss = sum(v.float().sum() for v in result["losses"].values())
    loss.backward()
    for p in model.parameters():
      if p.grad is not None:
        p.grad.div_(result["sample_size"])
    torch.nn.utils.clip_grad_norm_(model.parameters(), 4.0)
    torch_opt.step()
    updates["n"] += 1
    return float(loss.detach()) / float(result["sample_size"])

  torch.manual_seed(1)
  first = upstream_pretraining.step(model, fbank, mask, num_updates=0, backward=False)  # records the mask tokens
  noise = upstream_pretraining.mask_noise(first["decoder_input"], mask)
  torch_loss = first["loss_sum"] / first["sample_size"]

  optim = pretrain_eat_base.get_config().optim
  params = {"student": student, "decoder": decoder}
  labels = loss_lib.trainable_labels(params)
  tx, _ = optimizer.make_optimizer(ml_collections.ConfigDict(optim.to_dict()), 400_000, labels)
  state = loss_lib.create_state(student, teacher, decoder, tx)

  def update(s, f, m, n):  # the one train step over explicit masks and mask tokens
    loss = lambda p, e, b, r: loss_lib.objective_loss(p, e, f, m, n, None, config=settings,  # noqa: E731
                                                      num_visible=num_visible)
    train_step = ts.make_train_step(loss, tx, labels,
                                    update_extra=functools.partial(loss_lib.update_teacher, config=settings))
    return train_step(s, {}, jax.random.key(0))

  step = jax.jit(update, donate_argnums=(0,))
  fbank_j, mask_j, noise_j = jnp.asarray(fbank), jnp.asarray(mask != 0), jnp.asarray(noise)
  start = time.perf_counter()
  compiled = step.lower(state, fbank_j, mask_j, noise_j).compile()
  compile_s = time.perf_counter() - start
  holder = {"state": state}

  def jax_step():
    holder["state"], metrics = compiled(holder["state"], fbank_j, mask_j, noise_j)
    return float(jax.block_until_ready(metrics["loss"]))

  jax_loss = jax_step()  # the first update, from the same weights, masks and mask tokens as `first`
  timed = common.time_interleaved({"torch": torch_step, "jax": jax_step}, repeats=repeats, warmup=1)
  return dict(frames=frames, grid=grid, batch=batch, clone_batch=clone_batch, layers=layers, num_visible=num_visible,
              torch=timed["torch"], jax=timed["jax"], compile_s=compile_s, torch_loss=torch_loss, jax_loss=jax_loss,
              threads=torch.get_num_threads(), torch_version=torch.__version__,
              stand_ins=upstream_eat.stand_ins_in_use(), machine=common.machine_description(), repeats=repeats,
              seconds=seconds)


def section(result: dict) -> str:
  from benchmarks import common

  r = result
  torch_s, jax_s = r["torch"][0], r["jax"][0]
  rows = [["PyTorch upstream (eager)", r["batch"], f"{torch_s:.2f}", f"{r['torch'][1]:.2f}", f"{r['batch'] / torch_s:.3f}",
           "1", f"{r['torch_loss']:.6f}"],
          ["JAX (jit, one step)", r["batch"], f"{jax_s:.2f}", f"{r['jax'][1]:.2f}", f"{r['batch'] / jax_s:.3f}",
           f"{torch_s / jax_s:.2f}", f"{r['jax_loss']:.6f}"]]
  header = ["step", "clips", "median s", "spread s", "clips/s", "speed-up vs PyTorch", "first-step loss"]
  diff = abs(r["jax_loss"] - r["torch_loss"])
  return "\n".join([
      "## Side by side: one EAT pre-training step, upstream PyTorch vs JAX (float32, CPU)", "",
      f"{r['machine']}; torch {r['torch_version']} ({r['threads']} threads)", "",
      f"EAT-base layout ({r['layers']} x 768, decoder 6 x 768 kernel 3) built by upstream's `Data2VecMultiModel` "
      f"in pre-training mode with random weights, converted by `objective.from_fairseq_state_dict`; stand-ins for "
      f"{', '.join(r['stand_ins']) or 'nothing'}. {r['batch']} clips of {r['seconds']:g} s "
      f"({r['frames']} frames, {r['grid'][0]} x {r['grid'][1]} patches), {r['clone_batch']} masked views each "
      f"({r['num_visible']} visible patches + CLS per view), upstream's masks on both sides. A step: forward "
      f"(teacher once per clip, student per view, decoder), backward, clip 4, AdamW, EMA; JAX compiles it once "
      f"({r['compile_s']:.0f} s, not timed). {r['repeats']} timed steps each, alternating. First-step loss "
      f"difference (same weights, masks, mask tokens): {diff:.2e} (relative {diff / abs(r['torch_loss']):.1e}). "
      "Command: `python -m benchmarks.pretrain_side_by_side --upstream_eat=PATH`.", "",
      common.markdown_table(header, rows)])


def define_flags() -> None:
  flags.DEFINE_string("upstream_eat", None, "Your clone of cwx-worst-one/EAT (the folder holding models/).")
  flags.DEFINE_integer("batch", 2, "Clips per step.")
  flags.DEFINE_float("seconds", 2.0, "Clip length in seconds (the fbank is padded to a multiple of 16 frames).")
  flags.DEFINE_integer("clone_batch", 16, "Masked student views per clip.")
  flags.DEFINE_integer("layers", 12, "Encoder blocks (12 = EAT-base; fewer for a quick check).")
  flags.DEFINE_integer("repeats", 3, "Timed steps per side (after one warm-up each).")
  flags.DEFINE_string("output", "BENCHMARKS.md", "Markdown file whose pretrain_side_by_side section is rewritten "
                      "('' to print only).")


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.upstream_eat:
    sys.exit("give --upstream_eat=PATH (your clone of github.com/cwx-worst-one/EAT)")
  result = compare(f.upstream_eat, batch=f.batch, seconds=f.seconds, clone_batch=f.clone_batch, layers=f.layers,
                   repeats=f.repeats)
  text = section(result)
  print(text)
  if f.output:
    from benchmarks import run as runner

    output = pathlib.Path(f.output)
    document = output.read_text() if output.exists() else "# Benchmarks\n"
    output.write_text(runner.replace_section(document, "pretrain_side_by_side", text))
    print(f"wrote {output}")


if __name__ == "__main__":
  from asd_jax import cli

  define_flags()
  cli.run(main)
