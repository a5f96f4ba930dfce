"""From a config to the pieces of a fine-tuning run: the system, its initial state, labels, optimiser and loss.

Shared by the `train` and `embed` CLIs and by `--dry_run`. `config.model.encoder` picks the system:

* a registered encoder ("beats", "eat"): a `Classifier` (encoder + ArcFace head), pretrained weights from
  `config.model.init_checkpoint`;
* "dual_branch": BEATs and EAT side by side with the featex + SCAdaCos loss (`asd_jax.models.dual_branch`),
  pretrained weights from `config.model.beats_checkpoint` and `config.model.eat_checkpoint`.

A `System` holds only what differs between them: the module, its random init (model params and the
non-trainable `extra` state of the loss), which subtrees come from converted checkpoints, the loss on plain
parameters and the inference outputs. Everything else is one code path: LoRA factors over the targeted
kernels of every encoder, the trainable/frozen partition, the optimiser, the LoRA merge in the loss, the
`TrainState` (with `extra`, so checkpoints and resume carry it) and the parameter summary. The trainable tree
is `{"model": params}` for full fine-tuning and `{"model": params, "lora": factors}` with LoRA.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asd_jax.models import classifier
from asd_jax.models import dual_branch
from asd_jax.models import registry
from asd_jax.training import lora
from asd_jax.training import optimizer
from asd_jax.training import train_step as ts

Params = Any
DUAL_BRANCH = "dual_branch"  # config.model.encoder of the dual-branch system
DUAL_BRANCH_ENCODERS = ("beats", "eat")  # registry names of its two branches, in `DualBranch` order


@dataclasses.dataclass(frozen=True)
class System:
  """What one trainable system is, apart from the shared LoRA/optimiser/state machinery.

  Attributes:
    name: the system's name (`config.model.encoder`).
    model: its linen module (`Classifier` or `DualBranch`), for callers that apply it directly.
    init: `rng -> (model params, extra)`, random and jittable (run under `jax.eval_shape` for dry runs).
    loss: the training loss on plain (LoRA-merged) model params, with the train step's signature
      `(params, extra, batch, rng) -> (loss, (metrics, new extra))`.
    outputs: `(params, wav [batch, samples], all_layers) -> {name: [batch, ...]}`, the inference outputs
      written by `asd_jax.embed` (jittable).
    pretrained: `((path in the model params, source, params), ...)`: subtrees replaced after random init.
    lora_scopes: model subtrees that must each receive LoRA factors when LoRA is on (every encoder).
    architecture: JSON-able description of the encoder(s), stored in the checkpoint metadata.
    progress_metrics: metric names shown in the progress bar next to the loss.
  """

  name: str
  model: Any
  init: Callable[[jax.Array], tuple[Params, Params]]
  loss: ts.LossFn
  outputs: Callable[[Params, jax.Array, bool], dict[str, jax.Array]]
  pretrained: tuple[tuple[tuple[str, ...], str, Params], ...] = ()
  lora_scopes: tuple[tuple[str, ...], ...] = (("encoder",),)
  architecture: Any = None
  progress_metrics: tuple[str, ...] = ()


def compute_dtype(name: str) -> jnp.dtype:
  """"auto" is bfloat16 on GPU/TPU and float32 on CPU; otherwise the named dtype."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  return jnp.dtype(name)


ATTENTION_CHOICES = ("auto", "fused", "reference")


def encoder_options(model_cfg: ml_collections.ConfigDict) -> dict[str, bool]:
  """The encoders' fast-path switches that are on, from `config.model`: `fused_attention` ("auto" = on GPU
  only, where `jax.nn.dot_product_attention` can use cuDNN flash attention; on CPU it is no faster) and
  `remat`. Switches that are off are left out, so an encoder without them builds with its defaults."""
  attention = model_cfg.attention
  if attention not in ATTENTION_CHOICES:
    raise ValueError(f"config.model.attention is {attention!r}; expected one of {ATTENTION_CHOICES}")
  fused = jax.default_backend() == "gpu" if attention == "auto" else attention == "fused"
  options = {"fused_attention": fused, "remat": model_cfg.remat}
  return {name: value for name, value in options.items() if value}


def clip_samples(config: ml_collections.ConfigDict) -> int:
  return int(round(config.data.clip_seconds * config.data.sample_rate))


def encoder_architecture(encoder: str, preset: str, checkpoint: str = "") -> tuple[Any, Any]:
  """`(architecture config, encoder params or None)`: from `checkpoint` if set, else the named preset."""
  if checkpoint:
    return registry.get(encoder).load(checkpoint)
  return registry.preset(encoder, preset), None


def architecture(model_cfg: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """The single encoder's `(architecture, params or None)` from `init_checkpoint` or `preset`."""
  return encoder_architecture(model_cfg.encoder, model_cfg.preset, model_cfg.init_checkpoint)


def describe(arch: Any) -> Any:
  """JSON-able form of an architecture config."""
  if hasattr(arch, "to_dict"):
    return arch.to_dict()
  return dataclasses.asdict(arch) if dataclasses.is_dataclass(arch) else str(arch)


# --- Single encoder + ArcFace ---------------------------------------------------------------------------------


def build_model(model_cfg: ml_collections.ConfigDict, arch: Any, num_classes: int) -> classifier.Classifier:
  entry = registry.get(model_cfg.encoder)
  encoder = entry.build(arch, compute_dtype(model_cfg.dtype), **encoder_options(model_cfg))
  return classifier.Classifier(encoder=encoder, num_classes=num_classes, frontend=entry.frontend(),
                               dropout_rate=model_cfg.dropout_rate, pool=model_cfg.pool or entry.pool)


def classifier_outputs(model: classifier.Classifier) -> Callable[[Params, jax.Array, bool], dict[str, jax.Array]]:
  """Inference outputs of a `Classifier`: `embedding [B, D]` and with `all_layers` `layer_embeddings [B, L, D]`."""

  def outputs(params, wav, all_layers):
    out = model.apply({"params": params}, wav, train=False, all_layers=all_layers)
    out.pop("cosine")
    return out

  return outputs


def classifier_system(config: ml_collections.ConfigDict, model: classifier.Classifier, *,
                      encoder_params: Params = None, arch: Any = None) -> System:
  """A `Classifier` trained with ArcFace; `encoder_params` (from `init_checkpoint`) replace its encoder."""
  wav = jnp.zeros((1, clip_samples(config)), jnp.float32)
  source = config.model.init_checkpoint or "encoder params"
  return System(
      name=config.model.encoder,
      model=model,
      init=lambda rng: (model.init(rng, wav)["params"], {}),
      loss=ts.classification_loss(model, scale=config.loss.scale, margin=config.loss.margin),
      outputs=classifier_outputs(model),
      pretrained=() if encoder_params is None else ((("encoder",), source, encoder_params),),
      architecture=None if arch is None else describe(arch),
      progress_metrics=("accuracy",))


# --- Dual branch: BEATs + EAT, featex + SCAdaCos --------------------------------------------------------------


def dual_outputs(model: dual_branch.DualBranch, frontend: Callable) -> Callable[[Params, jax.Array, bool],
                                                                                 dict[str, jax.Array]]:
  """Inference outputs of the dual-branch model from waveforms: `embedding [B, Db + De]` (the fused embedding
  kNN scores) and with `all_layers` `layers_beats [B, Lb, Db]`, `layers_eat [B, Le, De]` (pooled per layer)."""

  def outputs(params, wav, all_layers):
    beats_fbank, eat_fbank = frontend({"wav": wav})
    if not all_layers:
      return {"embedding": dual_branch.embed(model, params, beats_fbank, eat_fbank)}
    layers = dual_branch.embed_layers(model, params, beats_fbank, eat_fbank)
    # The last layer's pooled output is the branch embedding, so one encoder pass gives both.
    return {"embedding": dual_branch.fuse(layers["beats"][:, -1], layers["eat"][:, -1]),
            "layers_beats": layers["beats"], "layers_eat": layers["eat"]}

  return outputs


def dual_loss_config(config: ml_collections.ConfigDict, num_classes: int) -> dual_branch.DualBranchLossConfig:
  """`config.loss` (fields of `DualBranchLossConfig`) with the label space's class count."""
  fields = config.loss.to_dict()
  known = {f.name for f in dataclasses.fields(dual_branch.DualBranchLossConfig)} - {"num_classes"}
  if set(fields) - known:
    raise ValueError(f"config.loss has fields {sorted(set(fields) - known)} that the dual-branch loss does not "
                     f"know; expected a subset of {sorted(known)}")
  return dual_branch.DualBranchLossConfig(num_classes=num_classes, **fields)


def dual_system(config: ml_collections.ConfigDict, model: dual_branch.DualBranch,
                loss_config: dual_branch.DualBranchLossConfig, frontend: Callable, *,
                pretrained: tuple = (), architecture: Any = None) -> System:
  """The dual-branch system; `frontend` maps `{"wav": [B, samples]}` to `(beats_fbank, eat_fbank)`."""
  wav = jnp.zeros((1, clip_samples(config)), jnp.float32)

  def init(rng):
    return dual_branch.init(rng, model, *frontend({"wav": wav}), loss_config)

  def loss(params, extra, batch, rng):
    # Only the waveform is mixed up: the pipeline's bookkeeping entries ("index") stay out of the loss.
    inputs = {key: batch[key] for key in ("wav", "label", "valid") if key in batch}
    return dual_branch.loss_fn(params, extra, inputs, rng, model=model, config=loss_config, frontend=frontend)

  return System(name=DUAL_BRANCH, model=model, init=init, loss=loss, outputs=dual_outputs(model, frontend),
                pretrained=pretrained, lora_scopes=tuple(("encoder", name) for name in DUAL_BRANCH_ENCODERS),
                architecture=architecture, progress_metrics=("main_loss", "featex_loss"))


def build_dual_system(config: ml_collections.ConfigDict, num_classes: int) -> System:
  """BEATs and EAT from `config.model.{beats,eat}_{preset,checkpoint,pool}` through the encoder registry."""
  dtype = compute_dtype(config.model.dtype)
  encoders, frontends, pools, pretrained, archs = {}, {}, {}, [], {}
  for name in DUAL_BRANCH_ENCODERS:
    entry = registry.get(name)
    checkpoint = config.model[f"{name}_checkpoint"]
    arch, params = encoder_architecture(name, config.model[f"{name}_preset"], checkpoint)
    encoders[name], frontends[name] = entry.build(arch, dtype, **encoder_options(config.model)), entry.frontend()
    pools[name] = config.model[f"{name}_pool"] or entry.pool
    archs[name] = describe(arch)
    if params is not None:
      pretrained.append((("encoder", name), checkpoint, params))
  model = dual_branch.DualBranch(beats=encoders["beats"], eat=encoders["eat"], beats_pool=pools["beats"],
                                 eat_pool=pools["eat"])

  def frontend(inputs):
    return frontends["beats"](inputs["wav"]), frontends["eat"](inputs["wav"])

  return dual_system(config, model, dual_loss_config(config, num_classes), frontend, pretrained=tuple(pretrained),
                     architecture=archs)


def build_system(config: ml_collections.ConfigDict, num_classes: int) -> System:
  """The system named by `config.model.encoder`, its head sized for `num_classes` classes."""
  if config.model.encoder == DUAL_BRANCH:
    return build_dual_system(config, num_classes)
  arch, encoder_params = architecture(config.model)
  return classifier_system(config, build_model(config.model, arch, num_classes), encoder_params=encoder_params,
                           arch=arch)


# --- Shared: initial state, partition, optimiser, loss, summary -----------------------------------------------


def replace_subtree(params: Params, path: tuple[str, ...], new: Params, source: str) -> Params:
  """`params` with the subtree at `path` replaced by `new` (as float32), after a shape check."""
  old = params
  for key in path:
    old = old[key]
  want = {k: v.shape for k, v in tu.flatten_dict(old).items()}
  got = {k: np.shape(v) for k, v in tu.flatten_dict(new).items()}
  if want != got:
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    shapes = [(k, want[k], got[k]) for k in set(want) & set(got) if want[k] != got[k]]
    raise ValueError(f"{source}: parameters do not fit the model at {'/'.join(path)}: missing {missing[:5]}, "
                     f"unexpected {extra[:5]}, shape mismatches (path, expected, found) {shapes[:5]}")
  flat = {k: v for k, v in tu.flatten_dict(params).items() if k[:len(path)] != path}
  flat.update({path + k: jnp.asarray(v, jnp.float32) for k, v in tu.flatten_dict(new).items()})
  return tu.unflatten_dict(flat)


def _check_lora_scopes(factors: Params, scopes: tuple[tuple[str, ...], ...], targets: str) -> None:
  covered = {keys[:len(scope)] for keys in tu.flatten_dict(factors) for scope in scopes}
  for scope in scopes:
    if scope not in covered:
      raise ValueError(f"LoRA targets {targets!r} match no kernel under {'/'.join(scope)}: that encoder would "
                       "stay frozen; widen config.lora.targets")


def init_trainable(config: ml_collections.ConfigDict, system: System, rng: jax.Array, *,
                   abstract: bool = False) -> tuple[Params, Params]:
  """`(trainable tree {"model", ["lora"]}, extra)`, pretrained subtrees in place; `abstract` gives
  ShapeDtypeStructs (no compute, no checkpoint values)."""
  model_rng, lora_rng = jax.random.split(rng)

  def init():
    params, extra = system.init(model_rng)
    tree = {"model": params}
    if config.lora.enabled:
      tree["lora"] = lora.init_lora(params, lora_rng, rank=config.lora.rank, targets=config.lora.targets)
      _check_lora_scopes(tree["lora"], system.lora_scopes, config.lora.targets)
    return tree, extra

  if abstract:
    return jax.eval_shape(init)
  tree, extra = jax.jit(init)()
  for path, source, params in system.pretrained:
    tree["model"] = replace_subtree(tree["model"], path, params, source)
  return tree, extra


def labels_for(config: ml_collections.ConfigDict, tree: Params) -> Params:
  return lora.trainable_labels(tree, train_encoder=not config.lora.enabled,
                               never_trained=config.model.never_trained)


def make_optimizer(config: ml_collections.ConfigDict, labels: Params, total_steps: int):
  return optimizer.make_optimizer(config.optim, total_steps, labels)


def loss_fn(config: ml_collections.ConfigDict, system: System) -> ts.LossFn:
  """The system's loss over the trainable tree (LoRA factors merged first)."""
  return ts.with_lora(system.loss, alpha=config.lora.alpha)


@dataclasses.dataclass(frozen=True)
class Run:
  """A run's initial state and what the train step is made from."""

  state: ts.TrainState  # concrete, or ShapeDtypeStructs when built with `abstract=True`
  labels: Params  # TRAINABLE / FROZEN per leaf of `state.params`
  tx: Any  # the optax partition
  loss: ts.LossFn  # over the trainable tree

  def train_step(self):
    return ts.make_train_step(self.loss, self.tx, self.labels)


def create_run(config: ml_collections.ConfigDict, system: System, rng: jax.Array, total_steps: int, *,
               abstract: bool = False) -> Run:
  """Initial `TrainState` (params, optimiser state, extra), labels, optimiser and loss of `system`."""
  tree, extra = init_trainable(config, system, rng, abstract=abstract)
  labels = labels_for(config, tree)
  tx, _ = make_optimizer(config, labels, total_steps)
  if abstract:
    state = jax.eval_shape(lambda t, e: ts.create_state(t, tx, e), tree, extra)
  else:
    state = ts.create_state(tree, tx, extra)
  return Run(state=state, labels=labels, tx=tx, loss=loss_fn(config, system))


def summary_rows(tree: Params, labels: Params, extra: Params = None, depth: int = 3) -> list[tuple[str, int, int]]:
  """`(subtree, total, trainable)` counts of the trainable tree and of the loss' `extra` state (never trained)."""
  if extra:
    tree = {**tree, "extra": extra}
    labels = {**labels, "extra": jax.tree.map(lambda _: lora.FROZEN, extra)}
  return lora.summary(tree, labels, depth=depth)


def format_summary(tree: Params, labels: Params, extra: Params = None, depth: int = 3) -> str:
  """A table of total and trainable parameter counts per subtree."""
  rows = summary_rows(tree, labels, extra, depth)
  width = max(len(name) for name, _, _ in rows)
  lines = [f"{'subtree':<{width}}  {'total':>13}  {'trainable':>13}"]
  lines += [f"{name:<{width}}  {total:>13,}  {train:>13,}" for name, total, train in rows]
  return "\n".join(lines)
