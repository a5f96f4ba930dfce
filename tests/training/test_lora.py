"""LoRA partition: factor shapes, merge equals the unmerged two-branch model, frozen weights untouched."""

import functools

import flax.linen as nn
import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import optax

from asd_jax.checkpoints import converted
from asd_jax.finetuning import lora
from asd_jax.models import classifier
from asd_jax.models import lora_factors
from asd_jax.training import optimizer
from asd_jax.training import train_step as ts
from configs import common

RANK, ALPHA = 4, 8.0


def _model_and_params(tiny_encoder, frontend, classes=3):
  model = classifier.Classifier(encoder=tiny_encoder(), num_classes=classes, frontend=frontend)
  wav = jax.random.normal(jax.random.key(0), (4, 1024))
  params = model.init(jax.random.key(1), wav)["params"]
  return model, params, wav


def test_init_lora_targets_q_v_out_of_every_block(tiny_encoder, frontend):
  _, params, _ = _model_and_params(tiny_encoder, frontend)
  factors = lora.init_lora(params, jax.random.key(2), rank=RANK)
  flat = tu.flatten_dict(factors)
  modules = sorted({"/".join(k[:-1]) for k in flat})
  assert modules == [f"encoder/layers_{i}/self_attn/{p}" for i in range(2) for p in ("out_proj", "q_proj", "v_proj")]
  for keys, value in flat.items():
    kernel = tu.flatten_dict(params)[keys[:-1] + ("kernel",)]
    expected = (kernel.shape[0], RANK) if keys[-1] == "a" else (RANK, kernel.shape[1])
    assert value.shape == expected
    if keys[-1] == "b":
      assert not np.any(np.asarray(value))


def test_merged_weights_equal_unmerged_lora_branch(tiny_encoder, frontend):
  model, params, wav = _model_and_params(tiny_encoder, frontend)
  factors = lora.init_lora(params, jax.random.key(2), rank=RANK)
  # Non-zero B so the branch matters.
  factors = jax.tree_util.tree_map_with_path(
      lambda p, x: jax.random.normal(jax.random.key(len(str(p))), x.shape) * 0.3 if p[-1].key == "b" else x, factors)
  merged = lora_factors.merge_lora({"model": params, "lora": factors}, alpha=ALPHA)
  out_merged = model.apply({"params": merged}, wav)["cosine"]

  # Unmerged reference: original weights, plus x @ A @ B * alpha / r added to every targeted Dense output.
  flat_factors = tu.flatten_dict(factors)

  def add_lora_branch(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    module = context.module
    if isinstance(module, nn.Dense) and context.method_name == "__call__":
      key = tuple(module.scope.path)
      if key + ("a",) in flat_factors:
        a, b = flat_factors[key + ("a",)], flat_factors[key + ("b",)]
        y = y + (args[0] @ a @ b) * (ALPHA / RANK)
    return y

  with nn.intercept_methods(add_lora_branch):
    out_unmerged = model.apply({"params": params}, wav)["cosine"]
  assert not np.allclose(out_merged, model.apply({"params": params}, wav)["cosine"], atol=1e-3)
  np.testing.assert_allclose(out_merged, out_unmerged, rtol=1e-5, atol=1e-5)


def test_lora_training_changes_only_factors_and_head(tiny_encoder, frontend):
  model, params, wav = _model_and_params(tiny_encoder, frontend)
  tree = {"model": params, "lora": lora.init_lora(params, jax.random.key(2), rank=RANK)}
  labels = lora.trainable_labels(tree, train_encoder=False)
  optim = common.get_config().optim
  optim.update(dict(learning_rate=1e-2, warmup_steps=0, warmup_fraction=0.0, schedule="constant",
                    weight_decay=0.01, grad_clip_norm=1.0))
  tx, _ = optimizer.make_optimizer(optim, 10, labels)
  state = ts.create_state(tree, tx)
  loss = lora.with_lora(functools.partial(classifier.classification_loss, model=model), alpha=ALPHA)
  step = jax.jit(ts.make_train_step(loss, tx, labels))
  batch = {"wav": wav, "label": jnp.array([0, 1, 2, 0])}
  new = state
  for i in range(3):
    new, metrics = step(new, batch, jax.random.key(3))
  assert np.isfinite(metrics["loss"])

  before, after = tu.flatten_dict(state.params), tu.flatten_dict(new.params)
  flat_labels = tu.flatten_dict(labels)
  for keys in before:
    same = np.array_equal(np.asarray(before[keys]).view(np.uint32), np.asarray(after[keys]).view(np.uint32))
    if flat_labels[keys] == optimizer.FROZEN:
      assert keys[1] == "encoder" and same, keys
    else:
      assert keys[0] == "lora" or keys[1] == "head", keys
      assert not same, keys  # every trainable leaf moved (B from zero, A through B's gradient, the head)

  # The optimiser state holds moments for trainable leaves only.
  state_leaves = sum(x.size for x in jax.tree.leaves(new.opt_state))
  trainable = sum(before[k].size for k in before if flat_labels[k] == optimizer.TRAINABLE)
  assert state_leaves == 2 * trainable + 2  # mu and nu per trainable scalar, plus two step counters


def test_summary_counts(tiny_encoder, frontend):
  _, params, _ = _model_and_params(tiny_encoder, frontend)
  tree = {"model": params, "lora": lora.init_lora(params, jax.random.key(2), rank=RANK)}
  rows = {name: (total, train) for name, total, train in
          optimizer.summary(tree, lora.trainable_labels(tree, train_encoder=False))}
  dim = 16
  assert rows["lora/encoder"] == (2 * 3 * 2 * dim * RANK,) * 2
  assert rows["model/head"] == (dim * 3, dim * 3)
  assert rows["model/encoder"][1] == 0
  assert rows["total"][1] == 2 * 3 * 2 * dim * RANK + dim * 3
  full = dict((n, (t, tr)) for n, t, tr in optimizer.summary({"model": params},
                                                        lora.trainable_labels({"model": params}, train_encoder=True)))
  assert full["total"][0] == full["total"][1] == converted.count_params(params)
