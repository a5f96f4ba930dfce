"""Converts a released BEATs PyTorch checkpoint into a Flax parameter directory.

  python -m weights_conversion.convert_beats --checkpoint BEATs_iter3_plus_AS2M.pt --output /path/to/beats_iter3p

The `.pt` file (`{"cfg": dict, "model": state_dict}`) is read with `torch.load(weights_only=True)` and
converted strictly by `asd_jax.models.beats.load`; the output directory holds `params/` (Orbax) and
`config.json`, and is what `beats.load` restores without PyTorch.
"""

from __future__ import annotations

from absl import flags

from asd_jax import cli
from asd_jax.checkpoints import converted
from asd_jax.models import beats


def convert(checkpoint: str, output: str) -> str:
  """Converts `checkpoint` into `output`; returns a one-paragraph summary."""
  config, params = beats.load(checkpoint)
  directory = converted.save_converted(output, params, beats.MODEL_NAME, config.to_dict())
  return (f"BEATs: {config.encoder_layers} layers, width {config.encoder_embed_dim}, "
          f"{config.encoder_attention_heads} heads, ffn {config.encoder_ffn_embed_dim}, patch channels "
          f"{config.embed_dim}, max_distance {config.max_distance}, finetuned {config.finetuned_model}; "
          f"{converted.count_params(params):,} parameters written to {directory}")


def define_flags() -> None:
  """Defines this CLI's flags; called only when run as a program (see `asd_jax.cli`)."""
  flags.DEFINE_string("checkpoint", None, "Released BEATs .pt file.", required=True)
  flags.DEFINE_string("output", None, "Directory to write (created; overwritten if it exists).",
                    required=True)


def main(argv):
  del argv
  print(convert(flags.FLAGS.checkpoint, flags.FLAGS.output))


if __name__ == "__main__":
  define_flags()
  cli.run(main)  # app.run; a missing or wrong-kind checkpoint exits with "error: ..."
