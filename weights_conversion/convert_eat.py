"""Converts a released EAT checkpoint (fairseq `.pt` or HuggingFace safetensors) into a Flax parameter directory.

  python -m weights_conversion.convert_eat --checkpoint EAT-base_epoch30_pretrain.pt --output /path/to/eat_base
  python -m weights_conversion.convert_eat --checkpoint EAT-base/ --output /path/to/eat_base   # HF folder
  python -m weights_conversion.convert_eat --checkpoint model.safetensors --hf_config config.json --output DIR

Conversion is strict (`asd_jax.models.eat.read_checkpoint`): any missing, unexpected or mis-shaped encoder
tensor is refused. The fairseq form's pretraining-only CNN decoder and `_ema` teacher are skipped and listed.
The output directory holds `params/` (Orbax) and `config.json`; `eat.load(DIR)` restores it without PyTorch.
"""

from __future__ import annotations

from absl import flags

from asd_jax import cli
from asd_jax.checkpoints import converted
from asd_jax.models import eat


def convert(checkpoint: str, output: str, hf_config: str | None = None) -> str:
  """Converts `checkpoint` into `output`; returns a short summary."""
  config, params, ignored = eat.read_checkpoint(checkpoint, hf_config)
  directory = eat.save_converted(output, config, params)
  total = converted.count_params(params)
  positions = params["positions"].size
  ignored_text = "none"
  if ignored:
    decoder = [k for k in ignored if k.startswith(eat.FAIRSEQ_PREFIX + "decoder.")]
    rest = [k for k in ignored if k not in decoder]
    ignored_text = f"{len(decoder)} decoder tensors ({eat.FAIRSEQ_PREFIX}decoder.*)" + "".join(
        f", {k}" + (" (EMA teacher)" if k == "_ema" else "") for k in rest)
  return "\n".join([
      f"EAT encoder from {checkpoint}",
      f"  {config.depth} blocks, width {config.embed_dim}, {config.num_heads} heads, mlp {config.mlp_dim}, "
      f"patch {config.patch_size}, position table {config.max_positions} rows",
      f"  {total:,} parameters ({total - positions:,} without the position table)",
      f"  ignored: {ignored_text}",
      f"  written to {directory}",
  ])


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.cli`)."""
  flags.DEFINE_string("checkpoint", None, "EAT .pt, .safetensors, or HF folder.", required=True)
  flags.DEFINE_string("hf_config", None, "HF config.json (default: next to the safetensors file).")
  flags.DEFINE_string("output", None, "Directory to write (created; overwritten if it exists).",
                    required=True)


def main(argv):
  del argv
  print(convert(flags.FLAGS.checkpoint, flags.FLAGS.output, flags.FLAGS.hf_config))


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; a missing or wrong-kind checkpoint exits with "error: ..."
