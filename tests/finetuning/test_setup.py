"""Parameter counts of the report's systems (abstract, no compute) and the dry-run summary."""

import flax.traverse_util as tu
import jax
import pytest

from asd_jax.finetuning import fine_tune
from asd_jax.models import networks
from asd_jax.training import optimizer
from configs import dual_branch, fbeats, feat, lbeats, leat

NUM_CLASSES = 7
LORA_FULL_SIZE = 12 * 3 * 2 * 768 * 64  # BEATs: blocks x (q, v, out) x (A, B) x dim x rank
LORA_EAT_LARGE = 24 * 3 * 2 * 1024 * 64  # EAT-large, the report's EAT
SUBCLUSTERS = 16


def _abstract(config, num_classes=NUM_CLASSES):
  network = networks.build_network(config, num_classes)
  tree, extra = fine_tune.init_trainable(config, network, jax.random.key(0), abstract=True)
  return tree, extra, fine_tune.labels_for(config, tree)


def _counts(config, depth=2):
  tree, extra, labels = _abstract(config)
  return {name: (total, train) for name, total, train in optimizer.summary(tree, labels, extra, depth)}


def test_lbeats_trains_exactly_lora_plus_head():
  assert LORA_FULL_SIZE == 3_538_944
  rows = _counts(lbeats.get_config())
  assert rows["lora/encoder"] == (LORA_FULL_SIZE, LORA_FULL_SIZE)
  assert rows["model/head"] == (768 * NUM_CLASSES,) * 2
  assert rows["model/encoder"][1] == 0
  assert rows["total"][1] == LORA_FULL_SIZE + 768 * NUM_CLASSES


def test_fbeats_trains_everything():
  rows = _counts(fbeats.get_config())
  assert "lora/encoder" not in rows
  assert rows["total"][0] == rows["total"][1] > 90_000_000  # BEATs base has ~90 M parameters


def test_feat_leat_and_dual_branch_default_to_eat_large():
  assert feat.get_config().model.preset == "large" and leat.get_config().model.preset == "large"
  assert dual_branch.get_config().model.eat_preset == "large"


def test_leat_trains_exactly_lora_plus_head():
  """The report's Table 1 lists LEAT with 62.91 M trainable parameters; LoRA r=64 on q, v, out of EAT-large's 24
  blocks of width 1024 plus the head gives 9.44 M (+ 1024 per class)."""
  assert LORA_EAT_LARGE == 9_437_184
  rows = _counts(leat.get_config())
  assert rows["lora/encoder"] == (LORA_EAT_LARGE, LORA_EAT_LARGE)
  assert rows["total"][1] == LORA_EAT_LARGE + 1024 * NUM_CLASSES


def test_extra_trainable_adds_matching_parameters_to_the_lora_partition():
  config = leat.get_config()
  config.lora.extra_trainable = r"norm"
  tree, _, labels = _abstract(config)
  flat = {"/".join(k): (v.size, labels_leaf) for (k, v), labels_leaf in
          zip(tu.flatten_dict(tree).items(), tu.flatten_dict(labels).values())}
  extra = {k: size for k, (size, label) in flat.items()
           if label == optimizer.TRAINABLE and k.startswith("model/encoder/")}
  # Every LayerNorm's scale and bias: two per block of the 24 and the one before them, 1024 wide.
  assert extra and all("norm" in k for k in extra)
  assert sum(extra.values()) == (24 * 2 + 1) * 2 * 1024
  rows = _counts(config)
  assert rows["total"][1] == LORA_EAT_LARGE + 1024 * NUM_CLASSES + (24 * 2 + 1) * 2 * 1024


def test_feat_trains_everything_but_the_fixed_positions():
  tree, _, labels = _abstract(feat.get_config())
  assert labels["model"]["encoder"]["positions"] == optimizer.FROZEN
  rows = {name: (total, train) for name, total, train in optimizer.summary(tree, labels, depth=3)}
  assert rows["total"][1] == rows["total"][0] - rows["model/encoder/positions"][0]


def test_dual_branch_trains_lora_of_both_encoders_plus_featex_centres():
  rows = _counts(dual_branch.get_config(), depth=3)
  fused = 768 + 1024  # BEATs + EAT-large
  assert rows["lora/encoder/beats"] == (LORA_FULL_SIZE, LORA_FULL_SIZE)
  assert rows["lora/encoder/eat"] == (LORA_EAT_LARGE, LORA_EAT_LARGE)
  assert rows["model/head/featex_centres"] == (fused * 3 * NUM_CLASSES * SUBCLUSTERS,) * 2
  assert rows["model/encoder/beats"][1] == rows["model/encoder/eat"][1] == 0
  assert rows["extra/main_centres"] == (fused * NUM_CLASSES * SUBCLUSTERS, 0)
  assert rows["extra/main_scale"] == rows["extra/featex_scale"] == (1, 0)
  assert rows["total"][1] == LORA_FULL_SIZE + LORA_EAT_LARGE + fused * 3 * NUM_CLASSES * SUBCLUSTERS


def test_dual_branch_lora_targets_must_reach_both_encoders():
  config = dual_branch.get_config()
  config.lora.targets = r"self_attn/(q_proj|v_proj|out_proj)/kernel$"  # BEATs' naming only
  with pytest.raises(ValueError, match="match no kernel under encoder/eat"):
    _abstract(config)


def test_dual_branch_config_rejects_single_encoder_fields():
  config = dual_branch.get_config()
  # Absent fields make `--config.model.init_checkpoint=...` fail in config_flags ("did you mean ...").
  assert not {"preset", "init_checkpoint", "pool", "dropout_rate"} & set(config.model)
  with pytest.raises(AttributeError, match="scale"):  # the config is locked: no new fields by accident
    config.loss.scale = 30.0
  with config.unlocked():
    config.loss.scale = 30.0  # an ArcFace field in the SCAdaCos loss, added on purpose
  with pytest.raises(ValueError, match=r"\['scale'\]"):
    networks.dual_loss_config(config, NUM_CLASSES)


def test_dry_run_prints_the_dual_branch_summary(tmp_path, capsys):
  config = dual_branch.get_config()
  config.data.root = str(tmp_path / "absent")
  assert fine_tune.train(config, str(tmp_path / "work"), dry_run=True) is None
  out = capsys.readouterr().out
  assert "dual_branch (LoRA fine-tuning), 1 classes" in out
  total = next(line for line in out.splitlines() if line.startswith("total"))
  assert int(total.split()[-1].replace(",", "")) == LORA_FULL_SIZE + LORA_EAT_LARGE + 1792 * 3 * 1 * SUBCLUSTERS
  assert not (tmp_path / "work").exists()
