"""EAT-large pre-training (cwx-worst-one/EAT `config/pretraining_AS2M_large.yaml`): what the report continued.

  python -m asd_jax.pretrain --config=configs/pretrain_eat_large.py:dcase:/data/dcase_dev,folder:/data/as2m \
      --workdir=DIR --config.model.init_checkpoint=/path/EAT-large_epoch20_pretrain.pt

The DCASE 2025 report pre-trained EAT-large "with the hyperparameters of the original EAT-large" on DCASE
2020-2024 Task 2 data and AudioSet, starting from the released model. The large yaml differs from the base one
(configs/pretrain_eat_base.py) only in: 24 x 1024 encoder with 16 heads, targets from all 24 blocks, a 3-layer
kernel-5 decoder of dim 1024, mask_prob 0.75 with adjustment 0.1, EMA annealed over 150,000 updates, lr 4e-4.
"""

from configs import pretrain_eat_base


def get_config(sources: str = ""):
  c = pretrain_eat_base.get_config(sources)
  c.model.preset = "large"
  c.decoder.decoder_dim = 1024
  c.decoder.decoder_kernel = 5
  c.decoder.decoder_layers = 3
  c.mask.mask_prob = 0.75
  c.mask.mask_prob_adjust = 0.1
  c.targets.average_top_k_layers = 24
  c.ema.anneal_end_step = 150_000
  c.optim.learning_rate = 4e-4
  return c
