"""Upstream EAT's pre-training forward, backward and EMA step on given weights, fbank and masks (PyTorch).

For the parity tests, the default-suite fixture (`benchmarks/make_pretraining_fixture.py`) and the
side-by-side benchmark. Upstream's `Data2VecMultiModel` is built in pre-training mode from a user's clone
(`benchmarks/upstream_eat.py`, stand-ins for fairseq / timm / omegaconf), loaded strictly from a fairseq
state_dict with its `_ema` teacher, and run exactly as fairseq's trainer runs it: `set_num_updates`, then
`forward(source, precomputed_mask=mask)` in training mode, the criterion's sum of the loss tensors, backward.
Nothing upstream returns is recomputed here; what it does not return is recorded with hooks: the decoder's
input (whose masked positions are the mask tokens upstream drew) and output, the student's last block
output, and the teacher targets (`make_targets`' return value).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from benchmarks import upstream_eat


def build(upstream_dir: str, cfg: Mapping[str, Any], state_dict: Mapping[str, Any], *, clone_batch: int,
          target_length: int, **model_overrides: Any) -> Any:
  """Upstream's pre-training model (train mode, EMA teacher) from a fairseq `cfg` and `model` state_dict.

  `clone_batch` and `target_length` (fbank frames; the decoder's grid) replace the cfg's; `model_overrides`
  replace other `cfg["model"]` fields (e.g. `ema_decay`).
  """
  upstream = upstream_eat.import_upstream_eat(upstream_dir)
  model_cfg = copy.deepcopy(dict(cfg["model"] if "model" in cfg else cfg))
  model_cfg.update(clone_batch=clone_batch, **model_overrides)
  model_cfg["modalities"]["image"]["target_length"] = target_length
  model = upstream_eat.build_model(upstream, model_cfg, pretraining=True)
  tensors = dict(state_dict)
  tensors["_ema"] = dict(tensors["_ema"])
  model.load_state_dict(tensors, strict=True)
  return model


def teacher_state(model: Any) -> dict[str, np.ndarray]:
  """The EMA teacher's float32 tensors (what a checkpoint stores as `_ema`)."""
  return {k: v.detach().cpu().numpy().copy() for k, v in model.ema.fp32_params.items()}


def student_state(model: Any) -> dict[str, np.ndarray]:
  """The student's tensors (the checkpoint's top-level `model` entries)."""
  return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items() if k != "_ema"}


def step(model: Any, fbank: np.ndarray, mask: np.ndarray, *, num_updates: int = 0,
         backward: bool = True) -> dict[str, Any]:
  """One upstream forward (+ backward) at update `num_updates`; returns NumPy arrays and floats.

  Keys: `targets [B, L, D]`, `decoder_input` / `decoder_predictions [B*C, L, D]`, `student [B*C, 1+V, D]`
  (upstream's token order), `ids_keep [B*C, V]` (that order, from upstream's own argsort of the mask),
  `regression_sum`, `cls_sum`, `sample_size`, `loss_sum` (what backward differentiates), the logged
  `masked_pct`, `pred_var`, `target_var`, `ema_decay`, and with `backward` `grads` (name -> array of the
  raw gradient of `loss_sum`; fairseq divides it by `sample_size` before the optimiser).
  """
  import torch

  recorded: dict[str, Any] = {}
  decoder = model.modality_encoders["IMAGE"].decoder
  hooks = [
      decoder.register_forward_pre_hook(lambda m, args: recorded.__setitem__("decoder_input", args[0].detach())),
      decoder.register_forward_hook(lambda m, args, out: recorded.__setitem__("decoder_predictions", out.detach())),
      model.blocks[-1].register_forward_hook(
          lambda m, args, out: recorded.__setitem__("student", out[0].detach())),
  ]
  make_targets = model.make_targets

  def recording_make_targets(y, num_layers):
    targets = make_targets(y, num_layers)
    recorded["targets"] = targets.detach().clone()
    return targets

  model.make_targets = recording_make_targets
  try:
    model.train()
    model.set_num_updates(num_updates)
    model.zero_grad(set_to_none=True)
    source = torch.from_numpy(np.ascontiguousarray(fbank, np.float32))[:, None]
    precomputed = torch.from_numpy(np.asarray(mask, np.float32))
    result = model(source, precomputed_mask=precomputed)
    losses = {name: value.float().sum() for name, value in result["losses"].items()}
    loss_sum = sum(losses.values())
    if backward:
      loss_sum.backward()
  finally:
    del model.make_targets
    for hook in hooks:
      hook.remove()
  kept = int(mask.shape[1] - np.asarray(mask[0] != 0).sum())
  ids_keep = torch.from_numpy(np.asarray(mask != 0, np.uint8)).argsort(dim=1)[:, :kept]  # upstream's own call
  out = {name: recorded[name].cpu().numpy() for name in ("targets", "decoder_input", "decoder_predictions", "student")}
  total = lambda name: float(losses[name].detach()) if name in losses else 0.0  # noqa: E731
  out.update(ids_keep=ids_keep.numpy(), regression_sum=total("IMAGE_regression"), cls_sum=total("cls"),
             sample_size=float(result["sample_size"]), loss_sum=float(loss_sum.detach()),
             masked_pct=float(result["masked_pct"]), pred_var=float(result["pred_var"]),
             target_var=float(result["target_var"]), ema_decay=float(result["ema_decay"]))
  if backward:
    out["grads"] = {name: p.grad.detach().cpu().numpy().copy() for name, p in model.named_parameters()
                    if p.grad is not None}
  return out


def mask_noise(decoder_input: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """The mask tokens upstream drew, `[B*C, L, D]` (zero at visible patches), from the recorded decoder input."""
  return np.where(np.asarray(mask != 0)[..., None], decoder_input, 0.0).astype(np.float32)


def visible_in_patch_order(student: np.ndarray, ids_keep: np.ndarray) -> np.ndarray:
  """Upstream's student outputs at visible patches `[B*C, V, D]`, reordered to ascending patch number."""
  order = np.argsort(ids_keep, axis=1, kind="stable")
  return np.take_along_axis(student[:, 1:], order[..., None], axis=1)


def block_masks(upstream_dir: str, views: int, grid: tuple[int, int], *, mask_prob: float, mask_length: int,
                mask_prob_adjust: float, inverse_mask: bool = True, seed: int | None = None) -> np.ndarray:
  """Upstream's `compute_block_mask_2d` masks `[views, patches]` float32 (1 = masked), as its data loader calls it."""
  import torch

  data_utils = upstream_eat.import_upstream_mask_generator(upstream_dir)
  if seed is not None:
    torch.manual_seed(seed)
  mask = data_utils.compute_block_mask_2d(
      shape=(views, grid[0] * grid[1]), mask_prob=mask_prob, mask_length=mask_length,
      mask_prob_adjust=mask_prob_adjust, inverse_mask=inverse_mask, require_same_masks=True, mask_dropout=0.0,
      img_shape=grid)
  return mask.numpy().astype(np.float32)
