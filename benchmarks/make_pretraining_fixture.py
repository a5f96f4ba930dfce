r"""Writes the pre-training parity fixture of the default test suite from upstream EAT (needs a clone).

  python -m benchmarks.make_pretraining_fixture --upstream_eat=/path/to/EAT [--fixtures=tests/fixtures]

`benchmarks/make_reference_fixtures.py` runs this too, after writing the EAT fixtures it reads (`make`); this
command rewrites only `eat_pretraining_tiny.npz`, beside them in `--fixtures`.

Upstream's pre-training model is built from the tiny fixture checkpoint `eat_tiny.pt` (student, `_ema`
teacher, decoder; `benchmarks/upstream_pretraining.py`) with 3 masked views per clip and the fixture
fbank's 400 frames as its target length. It runs one pre-training forward and backward on
`eat_tiny_io.npz`'s fbank with masks from upstream's own `compute_block_mask_2d` (torch seed 0), then one
EMA step (with the decay schedule set to 0.5 -> 0.9 over 10 updates, so that the step moves the teacher
well above float32 rounding). The file stores only upstream's inputs and outputs, no code: the masks, the
mask tokens it drew, the teacher targets, the student's CLS and visible-patch outputs, the decoder
predictions, the loss sums, the logged figures, the gradients (already divided by the sample size, as
fairseq does before the optimiser) of a few tensors, and those tensors of the teacher after the EMA step.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from absl import app, flags

from asd_jax import atomic
from benchmarks import upstream_pretraining

CLONES = 3
EMA = {"ema_decay": 0.5, "ema_end_decay": 0.9, "ema_anneal_end_step": 10}
GRADIENTS = ("modality_encoders.IMAGE.local_encoder.proj.weight", "modality_encoders.IMAGE.local_encoder.proj.bias",
             "modality_encoders.IMAGE.extra_tokens", "modality_encoders.IMAGE.context_encoder.norm.weight",
             "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.1.attn.proj.weight",
             "blocks.1.mlp.fc2.weight", "blocks.1.norm2.bias",
             "modality_encoders.IMAGE.decoder.blocks.0.0.weight", "modality_encoders.IMAGE.decoder.blocks.5.0.bias",
             "modality_encoders.IMAGE.decoder.proj.weight")
TEACHER = ("modality_encoders.IMAGE.local_encoder.proj.weight", "modality_encoders.IMAGE.extra_tokens",
           "modality_encoders.IMAGE.context_encoder.norm.bias", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc1.bias",
           "blocks.1.norm2.weight")
POSITION_ROWS = 256  # of the teacher's position table after the EMA step (copied from the student)
FILE = "eat_pretraining_tiny.npz"


def make(upstream_dir: str, fixtures: pathlib.Path) -> dict[str, np.ndarray]:
  """The arrays of `eat_pretraining_tiny.npz`, from `eat_tiny.pt` and `eat_tiny_io.npz` in `fixtures`."""
  import torch

  checkpoint = torch.load(fixtures / "eat_tiny.pt", map_location="cpu", weights_only=True)
  fbank = np.load(fixtures / "eat_tiny_io.npz")["fbank"]
  batch, frames, _ = fbank.shape
  grid = (frames // 16, 8)
  image = checkpoint["cfg"]["model"]["modalities"]["image"]
  model = upstream_pretraining.build(upstream_dir, checkpoint["cfg"], checkpoint["model"], clone_batch=CLONES,
                                     target_length=frames, **EMA)
  mask = upstream_pretraining.block_masks(upstream_dir, batch * CLONES, grid, mask_prob=image["mask_prob"],
                                          mask_length=image["mask_length"],
                                          mask_prob_adjust=image["mask_prob_adjust"], seed=0)
  torch.manual_seed(1)  # the mask tokens upstream draws
  out = upstream_pretraining.step(model, fbank, mask, num_updates=0)
  sample_size = out["sample_size"]
  model.set_num_updates(1)  # upstream's EMA step towards the (unchanged) student, decay(1) = 0.54
  teacher = upstream_pretraining.teacher_state(model)
  arrays = {
      "mask": mask.astype(np.uint8),
      "mask_noise": upstream_pretraining.mask_noise(out["decoder_input"], mask),
      "targets": out["targets"],
      "student_cls": out["student"][:, 0],
      "student_visible": upstream_pretraining.visible_in_patch_order(out["student"], out["ids_keep"]),
      "decoder_predictions": out["decoder_predictions"],
      "teacher_positions": teacher["modality_encoders.IMAGE.fixed_positional_encoder.positions"][:, :POSITION_ROWS],
  }
  for name in ("regression_sum", "cls_sum", "sample_size", "loss_sum", "masked_pct", "pred_var", "target_var",
               "ema_decay"):
    arrays[name] = np.float64(out[name])
  arrays.update({f"grad/{name}": out["grads"][name] / sample_size for name in GRADIENTS})
  arrays.update({f"teacher/{name}": teacher[name] for name in TEACHER})
  arrays["about"] = np.asarray(json.dumps({
      "clone_batch": CLONES, "target_length": frames, "ema_schedule": EMA, "mask_seed": 0, "noise_seed": 1,
      "source": "upstream EAT pretraining forward/backward/EMA on eat_tiny.pt and eat_tiny_io.npz fbank"}))
  return arrays


def main(argv):
  del argv
  fixtures = pathlib.Path(flags.FLAGS.fixtures)
  arrays = make(flags.FLAGS.upstream_eat, fixtures)
  out = fixtures / FILE
  atomic.write_with(str(out), lambda f: np.savez_compressed(f, **arrays), binary=True)
  from benchmarks import make_reference_fixtures  # pylint: disable=import-outside-toplevel  (it imports this)
  make_reference_fixtures.write_manifest(fixtures)  # the new file's sha256
  print(f"wrote {out} ({out.stat().st_size:,} bytes) and {fixtures / 'manifest.json'}")


if __name__ == "__main__":
  flags.DEFINE_string("upstream_eat", None, "A clone of github.com/cwx-worst-one/EAT.")
  flags.DEFINE_string("fixtures", str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures"),
                      "The reference fixtures folder (reads eat_tiny.pt and eat_tiny_io.npz, writes " + FILE + ").")
  flags.mark_flags_as_required(["upstream_eat"])
  app.run(main)
