"""From a config to a network: two tables of plain functions, `NETWORKS` and `ENCODERS`.

Shared by fine-tuning (`asd_jax.finetuning`), embedding extraction (`asd_jax.embedding`) and the exported
detector (`asd_jax.detector`), which rebuilds a network from its config without the training package.
`build_network(config, num_classes)` looks `config.model.network` up in `NETWORKS`:

* "beats", "eat" -> `classifier_network`: a `Classifier` (the encoder of that name in `ENCODERS` + an ArcFace
  head), pretrained weights from `config.model.init_checkpoint`;
* "dual_branch" -> `dual_branch_network`: BEATs and EAT side by side with the featex + SCAdaCos loss
  (`asd_jax.models.dual_branch`), pretrained weights from `config.model.beats_checkpoint` / `eat_checkpoint`;
* "log_mel_stats" -> `log_mel_stats_network`: no parameters at all, the non-learned reference features of
  `asd_jax.models.log_mel_stats` (it cannot be trained; the pipeline scores it as a reference row).

`ENCODERS` says, per encoder family, how to build its module (`beats.BEATs`, `eat.EAT`), its presets, its
front end (`beats_fbank`, `eat_fbank`) and how to load its checkpoints (`beats.load`, `eat.load`). A `Network`
holds only what differs between networks, each piece a module-level function with its arguments bound
(`functools.partial`), so the path from any caller to the encoder reads straight down this file: the embedder
calls `network.outputs` = `classifier_outputs(model, ...)` -> `Classifier` -> `ENCODERS[name].build` (BEATs or
EAT). LoRA, the optimiser and the train state are the training packages' (`asd_jax.finetuning.fine_tune`), one
code path for every network.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asd_jax.audio import fbank as fbank_lib
from asd_jax.models import beats
from asd_jax.models import classifier
from asd_jax.models import dual_branch
from asd_jax.models import eat
from asd_jax.models import encoder_output as eo
from asd_jax.models import log_mel_stats

Params = Any
# `(params, extra, batch, rng) -> (loss, (metrics, new extra))`, see `asd_jax.training.train_step`.
LossFn = Callable[[Params, Params, dict[str, jax.Array], jax.Array], tuple[jax.Array, tuple[dict, Params]]]
DUAL_BRANCH = "dual_branch"  # config.model.network of the dual-branch network
DUAL_BRANCH_ENCODERS = ("beats", "eat")  # `ENCODERS` names of its two branches, in `DualBranch` order
LOG_MEL_STATS = "log_mel_stats"  # config.model.network of the non-learned log-mel reference features


# --- Encoders -----------------------------------------------------------------------------------------------------


def beats_fbank(wav: jax.Array, target_length: int | None = None) -> jax.Array:
  """BEATs' front end: `wav [batch, samples]` -> fbank `[batch, frames, 128]` (no fixed frame count)."""
  del target_length  # BEATs takes every frame of the clip
  return fbank_lib.fbank(wav, config=fbank_lib.BEATS_FBANK)


def eat_fbank(wav: jax.Array, target_length: int | None = None) -> jax.Array:
  """EAT's front end: `wav [batch, samples]` -> fbank `[batch, target_length, 128]`, zero-padded or cropped.

  `target_length` None: `EAT_FBANK`'s 1024 frames (upstream's); 0: the clip's frames rounded up to a 16-frame
  patch.
  """
  config = fbank_lib.EAT_FBANK
  if target_length == 0:
    target_length = -(-config.num_frames(wav.shape[-1]) // 16) * 16
  if target_length is not None:
    config = dataclasses.replace(config, target_length=int(target_length))
  return fbank_lib.fbank(wav, config=config)


@dataclasses.dataclass(frozen=True)
class Encoder:
  """How to make and load one encoder family.

  Attributes:
    build: `(architecture config, dtype, **options) -> linen module` with the `EncoderOutput` contract; options
      are the fast-path switches `fused_attention` and `remat` (same maths, see the modules).
    presets: `{name: architecture config}` (e.g. "base", "tiny"; `config.model.preset`).
    frontend: `(wav [batch, samples], target_length) -> normalised fbank [batch, frames, mel]`, jittable.
    load: `(path) -> (architecture config, encoder params)` from a converted or released checkpoint.
    pool: default token pooling for the utterance embedding.
    target_length_field: the `config.model` field holding its fbank frames per clip ("" = none).
  """

  build: Callable[..., nn.Module]
  presets: Mapping[str, Any]
  frontend: Callable[..., jax.Array]
  load: Callable[[str], tuple[Any, Any]] | None
  pool: str = eo.POOL_MEAN
  target_length_field: str = ""


ENCODERS: dict[str, Encoder] = {
    "beats": Encoder(build=beats.BEATs, presets={"base": beats.BEATS_ITER3_PLUS, "tiny": beats.BEATS_TINY},
                     frontend=beats_fbank, load=beats.load),
    "eat": Encoder(build=eat.EAT, presets={"base": eat.EAT_BASE, "large": eat.EAT_LARGE, "tiny": eat.EAT_TINY},
                   frontend=eat_fbank, load=eat.load, target_length_field="eat_target_length"),
}


def encoder(name: str) -> Encoder:
  """`ENCODERS[name]`, or ValueError naming the known ones."""
  if name not in ENCODERS:
    raise ValueError(f"unknown encoder {name!r}; known: {sorted(ENCODERS)}")
  return ENCODERS[name]


def encoder_frontend(name: str, model_cfg: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
  """`wav -> fbank` of encoder `name` with the frames per clip of `model_cfg` (EAT's `eat_target_length`)."""
  entry = encoder(name)
  if not entry.target_length_field:
    return entry.frontend
  return functools.partial(entry.frontend, target_length=int(model_cfg.get(entry.target_length_field, 1024)))


def encoder_architecture(name: str, preset: str, checkpoint: str = "") -> tuple[Any, Any]:
  """`(architecture config, encoder params or None)`: from `checkpoint` if set, else the named preset."""
  entry = encoder(name)
  if checkpoint:
    return entry.load(checkpoint)
  if preset not in entry.presets:
    raise ValueError(f"encoder {name!r} has no preset {preset!r} (config.model.preset); expected one of "
                     f"{sorted(entry.presets)}")
  return entry.presets[preset], None


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


def describe(arch: Any) -> Any:
  """JSON-able form of an architecture config."""
  if hasattr(arch, "to_dict"):
    return arch.to_dict()
  return dataclasses.asdict(arch) if dataclasses.is_dataclass(arch) else str(arch)


def clip_samples(config: ml_collections.ConfigDict) -> int:
  return int(round(config.data.clip_seconds * config.data.sample_rate))


# --- Networks -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Network:
  """What one network is, apart from the shared LoRA/optimiser/state machinery.

  Attributes:
    name: the network's name (`config.model.network`).
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
    class_scores: `(params, extra, wav [batch, samples]) -> [batch, classes]`, eval-mode scores whose argmax
      is the predicted class (held-out accuracy, `asd_jax.finetuning.holdout`); None for a network that is not
      trained.
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
  class_scores: Callable[[Params, Params, jax.Array], jax.Array] | None = None


# Single encoder + ArcFace: "beats", "eat".


def build_classifier(model_cfg: ml_collections.ConfigDict, arch: Any, num_classes: int, *,
                     num_subclusters: int = 1) -> classifier.Classifier:
  """The `Classifier` of encoder `model_cfg.network` with architecture `arch` and `num_subclusters` ArcFace
  centres per class."""
  entry = encoder(model_cfg.network)
  return classifier.Classifier(encoder=entry.build(arch, compute_dtype(model_cfg.dtype), **encoder_options(model_cfg)),
                               num_classes=num_classes, frontend=encoder_frontend(model_cfg.network, model_cfg),
                               dropout_rate=model_cfg.dropout_rate, pool=model_cfg.pool or entry.pool,
                               num_subclusters=num_subclusters)


def classifier_init(model: classifier.Classifier, samples: int, rng: jax.Array) -> tuple[Params, Params]:
  """Random `(params, {})` of a `Classifier` taking `samples`-long clips."""
  return model.init(rng, jnp.zeros((1, samples), jnp.float32))["params"], {}


def classifier_outputs(model: classifier.Classifier, params: Params, wav: jax.Array,
                       all_layers: bool) -> dict[str, jax.Array]:
  """Inference outputs of a `Classifier`: `embedding [B, D]` and with `all_layers` `layer_embeddings [B, L, D]`."""
  out = model.apply({"params": params}, wav, train=False, all_layers=all_layers)
  out.pop("cosine")
  return out


def classifier_scores(model: classifier.Classifier, params: Params, extra: Params, wav: jax.Array) -> jax.Array:
  """Eval-mode class cosines `[B, classes]` of a `Classifier` (its ArcFace head without the margin)."""
  del extra
  return model.apply({"params": params}, wav, train=False)["cosine"]


def augment_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`classification_loss`'s augmentation arguments from `config.augment` (none in configs without it)."""
  aug = config.get("augment")
  if aug is None:
    return {}
  masks = {k: int(aug[k]) for k in ("time_masks", "time_width", "freq_masks", "freq_width")}
  return {"mixup_prob": float(aug.mixup_prob), "masks": masks}


def classifier_network(config: ml_collections.ConfigDict, num_classes: int) -> Network:
  """A `Classifier` trained with ArcFace; `config.model.init_checkpoint` (if set) gives its encoder's weights."""
  arch, encoder_params = encoder_architecture(config.model.network, config.model.preset, config.model.init_checkpoint)
  model = build_classifier(config.model, arch, num_classes, num_subclusters=int(config.loss.get("num_subclusters", 1)))
  return classifier_network_of(config, model, encoder_params=encoder_params, arch=arch)


def classifier_network_of(config: ml_collections.ConfigDict, model: classifier.Classifier, *,
                          encoder_params: Params = None, arch: Any = None) -> Network:
  """The `Network` of a built `Classifier`; `encoder_params` (from `init_checkpoint`) replace its encoder."""
  source = config.model.init_checkpoint or "encoder params"
  return Network(
      name=config.model.network,
      module=model,
      init=functools.partial(classifier_init, model, clip_samples(config)),
      loss=functools.partial(classifier.classification_loss, model=model, scale=config.loss.scale,
                             margin=config.loss.margin, **augment_options(config)),
      outputs=functools.partial(classifier_outputs, model),
      pretrained=() if encoder_params is None else ((("encoder",), source, encoder_params),),
      architecture=None if arch is None else describe(arch),
      progress_metrics=("accuracy",),
      class_scores=functools.partial(classifier_scores, model))


# Dual branch: BEATs + EAT, featex + SCAdaCos.


def dual_frontend(frontends: tuple[Callable, Callable], inputs: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """`{"wav": [B, samples]}` -> `(beats_fbank, eat_fbank)` through the two branches' front ends."""
  return frontends[0](inputs["wav"]), frontends[1](inputs["wav"])


def dual_init(model: dual_branch.DualBranch, frontend: Callable, loss_config: dual_branch.DualBranchLossConfig,
              samples: int, rng: jax.Array) -> tuple[Params, Params]:
  """Random `(params, extra)` of the dual-branch model and its heads for `samples`-long clips."""
  return dual_branch.init(rng, model, *frontend({"wav": jnp.zeros((1, samples), jnp.float32)}), loss_config)


def dual_loss(params: Params, extra: Params, batch: Mapping[str, jax.Array], rng: jax.Array, *,
              model: dual_branch.DualBranch, config: dual_branch.DualBranchLossConfig, frontend: Callable):
  """`dual_branch.loss_fn` on the batch's waveforms: the pipeline's bookkeeping entries ("index") stay out of the
  loss, so only the waveform is mixed up."""
  inputs = {key: batch[key] for key in ("wav", "label", "valid") if key in batch}
  return dual_branch.loss_fn(params, extra, inputs, rng, model=model, config=config, frontend=frontend)


def dual_outputs(model: dual_branch.DualBranch, frontend: Callable, params: Params, wav: jax.Array,
                 all_layers: bool) -> dict[str, jax.Array]:
  """Inference outputs of the dual-branch model from waveforms: `embedding [B, Db + De]` (the fused branch
  features kNN scores) and with `all_layers` `layers_beats [B, Lb, Db]`, `layers_eat [B, Le, De]` (pooled per
  layer)."""
  beats_fbank, eat_fbank = frontend({"wav": wav})
  if not all_layers:
    return {"embedding": dual_branch.embed(model, params, beats_fbank, eat_fbank)}
  layers = dual_branch.embed_layers(model, params, beats_fbank, eat_fbank)
  # The last layer's pooled output is the branch embedding, so one encoder pass gives both.
  return {"embedding": dual_branch.fuse(layers["beats"][:, -1], layers["eat"][:, -1]),
          "layers_beats": layers["beats"], "layers_eat": layers["eat"]}


def dual_loss_config(config: ml_collections.ConfigDict, num_classes: int) -> dual_branch.DualBranchLossConfig:
  """`config.loss` (fields of `DualBranchLossConfig`) with the label space's class count."""
  fields = config.loss.to_dict()
  known = {f.name for f in dataclasses.fields(dual_branch.DualBranchLossConfig)} - {"num_classes"}
  if set(fields) - known:
    raise ValueError(f"config.loss has fields {sorted(set(fields) - known)} that the dual-branch loss does not "
                     f"know; expected a subset of {sorted(known)}")
  return dual_branch.DualBranchLossConfig(num_classes=num_classes, **fields)


def dual_scores(model: dual_branch.DualBranch, frontend: Callable, num_subclusters: int, params: Params,
                extra: Params, wav: jax.Array) -> jax.Array:
  """Eval-mode log class probabilities `[B, classes]` of the dual-branch model's main head."""
  return dual_branch.class_log_probabilities(model, params, extra, *frontend({"wav": wav}),
                                             num_subclusters=num_subclusters)


def dual_network_of(config: ml_collections.ConfigDict, model: dual_branch.DualBranch,
                    loss_config: dual_branch.DualBranchLossConfig, frontend: Callable, *,
                    pretrained: tuple = (), architecture: Any = None) -> Network:
  """The `Network` of a built dual-branch model; `frontend` maps `{"wav": [B, samples]}` to
  `(beats_fbank, eat_fbank)`."""
  return Network(name=DUAL_BRANCH, module=model,
                 init=functools.partial(dual_init, model, frontend, loss_config, clip_samples(config)),
                 loss=functools.partial(dual_loss, model=model, config=loss_config, frontend=frontend),
                 outputs=functools.partial(dual_outputs, model, frontend), pretrained=pretrained,
                 lora_scopes=tuple(("encoder", name) for name in DUAL_BRANCH_ENCODERS), architecture=architecture,
                 progress_metrics=("accuracy", "main_loss", "featex_loss"),
                 class_scores=functools.partial(dual_scores, model, frontend, loss_config.num_subclusters))


def dual_branch_network(config: ml_collections.ConfigDict, num_classes: int) -> Network:
  """BEATs and EAT from `config.model.{beats,eat}_{preset,checkpoint,pool}` through `ENCODERS`."""
  dtype = compute_dtype(config.model.dtype)
  modules, frontends, pools, pretrained, archs = {}, [], {}, [], {}
  for name in DUAL_BRANCH_ENCODERS:
    entry = encoder(name)
    checkpoint = config.model[f"{name}_checkpoint"]
    arch, params = encoder_architecture(name, config.model[f"{name}_preset"], checkpoint)
    modules[name] = entry.build(arch, dtype, **encoder_options(config.model))
    frontends.append(encoder_frontend(name, config.model))
    pools[name] = config.model[f"{name}_pool"] or entry.pool
    archs[name] = describe(arch)
    if params is not None:
      pretrained.append((("encoder", name), checkpoint, params))
  model = dual_branch.DualBranch(beats=modules["beats"], eat=modules["eat"], beats_pool=pools["beats"],
                                 eat_pool=pools["eat"])
  return dual_network_of(config, model, dual_loss_config(config, num_classes),
                         functools.partial(dual_frontend, tuple(frontends)), pretrained=tuple(pretrained),
                         architecture=archs)


# Non-learned reference features: "log_mel_stats".


def no_params(rng: jax.Array) -> tuple[Params, Params]:
  """`({}, {})`: a network without parameters or state."""
  del rng
  return {}, {}


def log_mel_stats_network(config: ml_collections.ConfigDict, num_classes: int) -> Network:
  """Per-clip mean and standard deviation of the log-mel fbank over time (no parameters, no training)."""
  del config, num_classes
  return Network(name=LOG_MEL_STATS, module=None, init=no_params, loss=None, outputs=log_mel_stats.outputs,
                 lora_scopes=(), architecture=log_mel_stats.describe())


NETWORKS: dict[str, Callable[[ml_collections.ConfigDict, int], Network]] = {
    "beats": classifier_network,
    "eat": classifier_network,
    DUAL_BRANCH: dual_branch_network,
    LOG_MEL_STATS: log_mel_stats_network,
}


def build_network(config: ml_collections.ConfigDict, num_classes: int) -> Network:
  """The network named by `config.model.network` (`NETWORKS`), its head sized for `num_classes` classes."""
  name = config.model.get("network")
  if name is None and "encoder" in config.model:
    raise ValueError(f"config.model.encoder={config.model.encoder!r}: that field is now config.model.network")
  if name not in NETWORKS:
    raise ValueError(f"unknown network {name!r} (config.model.network); known: {sorted(NETWORKS)}")
  return NETWORKS[name](config, num_classes)


def encoder_slots(config: ml_collections.ConfigDict) -> list[tuple[tuple[str, ...], str, str]]:
  """`(path in the model params, ENCODERS name, config.model field of its checkpoint)` of every encoder of the
  network `config.model.network` names: one for "beats" and "eat", both for the dual branch, none for the
  log-mel statistics. What the exporter writes per encoder and what the pipeline states each one starts from."""
  network = config.model.get("network")
  if network == DUAL_BRANCH:
    return [(("encoder", name), name, f"{name}_checkpoint") for name in DUAL_BRANCH_ENCODERS]
  if network == LOG_MEL_STATS:
    return []
  return [(("encoder",), network, "init_checkpoint")]


# --- Parameters before any training -------------------------------------------------------------------------------


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
