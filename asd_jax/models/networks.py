"""From a config to a network: its linen module, random init, training loss, inference outputs, pretrained parts.

Shared by fine-tuning (`asd_jax.training`), embedding extraction (`asd_jax.embedding`) and the exported
detector (`asd_jax.detector`), which rebuilds a network from its config without the training package.
`config.model.encoder` picks the network:

* a registered encoder ("beats", "eat"): a `Classifier` (encoder + ArcFace head), pretrained weights from
  `config.model.init_checkpoint`;
* "dual_branch": BEATs and EAT side by side with the featex + SCAdaCos loss (`asd_jax.models.dual_branch`),
  pretrained weights from `config.model.beats_checkpoint` and `config.model.eat_checkpoint`;
* "log_mel_stats": no parameters at all, the non-learned reference features of `asd_jax.models.log_mel_stats`
  (it cannot be trained; the pipeline scores it as a reference row).

A `Network` holds only what differs between them; LoRA, the optimiser and the train state are the training
package's (`asd_jax.finetuning.fine_tune`), one code path for every network.
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
from asd_jax.models import log_mel_stats
from asd_jax.models import registry

Params = Any
# `(params, extra, batch, rng) -> (loss, (metrics, new extra))`, see `asd_jax.training.train_step`.
LossFn = Callable[[Params, Params, dict[str, jax.Array], jax.Array], tuple[jax.Array, tuple[dict, Params]]]
DUAL_BRANCH = "dual_branch"  # config.model.encoder of the dual-branch network
DUAL_BRANCH_ENCODERS = ("beats", "eat")  # registry names of its two branches, in `DualBranch` order
LOG_MEL_STATS = "log_mel_stats"  # config.model.encoder of the non-learned log-mel reference features


@dataclasses.dataclass(frozen=True)
class Network:
  """What one network is, apart from the shared LoRA/optimiser/state machinery.

  Attributes:
    name: the network's name (`config.model.encoder`).
    module: its linen module (`Classifier` or `DualBranch`; None for parameter-free features).
    init: `rng -> (model params, extra)`, random and jittable (run under `jax.eval_shape` for dry runs).
    loss: the training loss on plain (LoRA-merged) model params, with the train step's signature
      `(params, extra, batch, rng) -> (loss, (metrics, new extra))`; None for a network that is not trained.
    outputs: `(params, wav [batch, samples], all_layers) -> {name: [batch, ...]}`, the inference outputs
      written by `asd_jax.embedding` (jittable). Each row depends on its own clip only.
    pretrained: `((path in the model params, source, params), ...)`: subtrees replaced after random init.
    lora_scopes: model subtrees that must each receive LoRA factors when LoRA is on (every encoder).
    architecture: JSON-able description of the encoder(s), stored in checkpoint metadata and detectors.
    progress_metrics: metric names shown in the progress bar next to the loss.
  """

  name: str
  module: Any
  init: Callable[[jax.Array], tuple[Params, Params]]
  loss: LossFn | None
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


def frontend_options(model_cfg: ml_collections.ConfigDict, encoder: str) -> dict[str, Any]:
  """Front-end options of `encoder` from the model config: EAT's `eat_target_length` (fbank frames per clip)."""
  if encoder == "eat":
    return {"target_length": int(model_cfg.get("eat_target_length", 1024))}
  return {}


def build_classifier(model_cfg: ml_collections.ConfigDict, arch: Any, num_classes: int) -> classifier.Classifier:
  entry = registry.get(model_cfg.encoder)
  encoder = entry.build(arch, compute_dtype(model_cfg.dtype), **encoder_options(model_cfg))
  return classifier.Classifier(encoder=encoder, num_classes=num_classes,
                               frontend=entry.frontend(**frontend_options(model_cfg, model_cfg.encoder)),
                               dropout_rate=model_cfg.dropout_rate, pool=model_cfg.pool or entry.pool)


def classifier_outputs(model: classifier.Classifier) -> Callable[[Params, jax.Array, bool], dict[str, jax.Array]]:
  """Inference outputs of a `Classifier`: `embedding [B, D]` and with `all_layers` `layer_embeddings [B, L, D]`."""

  def outputs(params, wav, all_layers):
    out = model.apply({"params": params}, wav, train=False, all_layers=all_layers)
    out.pop("cosine")
    return out

  return outputs


def classifier_network(config: ml_collections.ConfigDict, model: classifier.Classifier, *,
                       encoder_params: Params = None, arch: Any = None) -> Network:
  """A `Classifier` trained with ArcFace; `encoder_params` (from `init_checkpoint`) replace its encoder."""
  wav = jnp.zeros((1, clip_samples(config)), jnp.float32)
  source = config.model.init_checkpoint or "encoder params"
  return Network(
      name=config.model.encoder,
      module=model,
      init=lambda rng: (model.init(rng, wav)["params"], {}),
      loss=classifier.classification_loss(model, scale=config.loss.scale, margin=config.loss.margin),
      outputs=classifier_outputs(model),
      pretrained=() if encoder_params is None else ((("encoder",), source, encoder_params),),
      architecture=None if arch is None else describe(arch),
      progress_metrics=("accuracy",))


# --- Dual branch: BEATs + EAT, featex + SCAdaCos --------------------------------------------------------------


def dual_outputs(model: dual_branch.DualBranch, frontend: Callable) -> Callable[[Params, jax.Array, bool],
                                                                                 dict[str, jax.Array]]:
  """Inference outputs of the dual-branch model from waveforms: `embedding [B, Db + De]` (the fused branch
  features kNN scores) and with `all_layers` `layers_beats [B, Lb, Db]`, `layers_eat [B, Le, De]` (pooled per
  layer)."""

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


def dual_network(config: ml_collections.ConfigDict, model: dual_branch.DualBranch,
                 loss_config: dual_branch.DualBranchLossConfig, frontend: Callable, *,
                 pretrained: tuple = (), architecture: Any = None) -> Network:
  """The dual-branch network; `frontend` maps `{"wav": [B, samples]}` to `(beats_fbank, eat_fbank)`."""
  wav = jnp.zeros((1, clip_samples(config)), jnp.float32)

  def init(rng):
    return dual_branch.init(rng, model, *frontend({"wav": wav}), loss_config)

  def loss(params, extra, batch, rng):
    # Only the waveform is mixed up: the pipeline's bookkeeping entries ("index") stay out of the loss.
    inputs = {key: batch[key] for key in ("wav", "label", "valid") if key in batch}
    return dual_branch.loss_fn(params, extra, inputs, rng, model=model, config=loss_config, frontend=frontend)

  return Network(name=DUAL_BRANCH, module=model, init=init, loss=loss, outputs=dual_outputs(model, frontend),
                 pretrained=pretrained, lora_scopes=tuple(("encoder", name) for name in DUAL_BRANCH_ENCODERS),
                 architecture=architecture, progress_metrics=("main_loss", "featex_loss"))


def build_dual_network(config: ml_collections.ConfigDict, num_classes: int) -> Network:
  """BEATs and EAT from `config.model.{beats,eat}_{preset,checkpoint,pool}` through the encoder registry."""
  dtype = compute_dtype(config.model.dtype)
  encoders, frontends, pools, pretrained, archs = {}, {}, {}, [], {}
  for name in DUAL_BRANCH_ENCODERS:
    entry = registry.get(name)
    checkpoint = config.model[f"{name}_checkpoint"]
    arch, params = encoder_architecture(name, config.model[f"{name}_preset"], checkpoint)
    encoders[name], frontends[name] = entry.build(arch, dtype, **encoder_options(config.model)), entry.frontend(
        **frontend_options(config.model, name))
    pools[name] = config.model[f"{name}_pool"] or entry.pool
    archs[name] = describe(arch)
    if params is not None:
      pretrained.append((("encoder", name), checkpoint, params))
  model = dual_branch.DualBranch(beats=encoders["beats"], eat=encoders["eat"], beats_pool=pools["beats"],
                                 eat_pool=pools["eat"])

  def frontend(inputs):
    return frontends["beats"](inputs["wav"]), frontends["eat"](inputs["wav"])

  return dual_network(config, model, dual_loss_config(config, num_classes), frontend, pretrained=tuple(pretrained),
                      architecture=archs)


# --- Non-learned reference features ---------------------------------------------------------------------------


def log_mel_network(config: ml_collections.ConfigDict) -> Network:
  """Per-clip mean and standard deviation of the log-mel fbank over time (no parameters, no training)."""
  del config
  return Network(name=LOG_MEL_STATS, module=None, init=lambda rng: ({}, {}), loss=None,
                 outputs=log_mel_stats.outputs, lora_scopes=(), architecture=log_mel_stats.describe())


def build_network(config: ml_collections.ConfigDict, num_classes: int) -> Network:
  """The network named by `config.model.encoder`, its head sized for `num_classes` classes."""
  if config.model.encoder == DUAL_BRANCH:
    return build_dual_network(config, num_classes)
  if config.model.encoder == LOG_MEL_STATS:
    return log_mel_network(config)
  arch, encoder_params = architecture(config.model)
  return classifier_network(config, build_classifier(config.model, arch, num_classes), encoder_params=encoder_params,
                            arch=arch)


# --- Parameters before any training ----------------------------------------------------------------------------


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


def with_pretrained(network: Network, params: Params) -> Params:
  """`params` with every pretrained subtree of `network` in place."""
  for path, source, subtree in network.pretrained:
    params = replace_subtree(params, path, subtree, source)
  return params


def initial_params(network: Network, rng: jax.Array) -> Params:
  """The model params of `network` before training: random init with the pretrained subtrees in place (what a
  frozen reference model embeds with)."""
  params, _ = jax.jit(network.init)(rng)
  return with_pretrained(network, params)
