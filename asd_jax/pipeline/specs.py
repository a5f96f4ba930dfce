"""The models and fused systems of a pipeline config.

A pipeline config (see `configs/pipeline_base.py`) names its models in `model_keys`; each entry of `models`
is one of three kinds:

* fine-tuned (`fine_tune`: a fine-tuning config, run by `asd_jax.finetuning.fine_tune`);
* frozen (`frozen`: a network config that is embedded without any training: a pretrained encoder as converted,
  or random init in demos, or the non-learned log-mel statistics `model.network="log_mel_stats"`);
* concatenation (`sources`: keys of other embedded models whose final embeddings are L2-normalised and joined,
  the report's "Fusion" model, which has no training of its own).

Every model also says which embedding its kNN scorer sees: `layers="last"` (the pooled final layer; for the
dual-branch model its fused branch features) or `layers="all"` (multi-layer fusion: every layer's pooled
output, each L2-normalised, concatenated; `scoring.features.model_vectors`).

A system is a linear fusion of the models' normalised anomaly scores with fixed weights, listed against the
report's model names (`config.system_models`, `configs/systems.py`). A model whose name is not among them is
a reference row of Table 1 (e.g. a frozen encoder): scored and evaluated, never fused, unless a config lists
it. When a config runs fewer models than a system names (e.g. `--config.model_keys=fbeats,lbeats`), the system
keeps the weights of the models present, renormalised to sum 1, and is marked reduced.

Channels: every embedded model of a pipeline reads its clips with one channel policy (`asd_jax.audio.channels`).
`config.data.channels`, when set, is written into every model's config (as `config.data.root` is) and so
overrides each model's own `data.channels`; when empty, the models keep their own, which must then agree. One
policy because the pipeline scans the dataset once against it, Table 1 compares models on the same input, and
a system's detector reads a recording once for all its models (`channel_policy`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from asd_jax.audio import channels as channels_lib
from asd_jax.scoring import features

FINE_TUNED = "fine-tuned"
FROZEN = "frozen"
CONCATENATION = "concatenation"
# A pre-training corpus source path that stands for the pipeline's own dataset (`config.data.root`).
DATA_ROOT = "<data.root>"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One model of a pipeline run.

  Attributes:
    key: config key and workdir folder name, e.g. "lbeats".
    name: name in the tables and system weights, e.g. "LBEATs".
    kind: FINE_TUNED, FROZEN or CONCATENATION.
    config: the fine-tuning config (FINE_TUNED) or network config (FROZEN), data root and pretrained
      checkpoints filled in; None for a concatenation model.
    sources: keys of the models a concatenation model joins; empty otherwise.
    layers: "last" (final pooled embedding) or "all" (multi-layer fusion).
    scorer: `scoring.scorer` settings.
    reference: a reference row of Table 1, not one of the systems' models.
  """

  key: str
  name: str
  kind: str
  config: ml_collections.ConfigDict | None
  sources: tuple[str, ...]
  layers: str
  scorer: dict[str, Any]
  reference: bool = False

  @property
  def trained(self) -> bool:
    return self.kind == FINE_TUNED

  @property
  def embedded(self) -> bool:
    """Has embeddings of its own (fine-tuned or frozen), as opposed to a concatenation of others'."""
    return self.kind in (FINE_TUNED, FROZEN)

  @property
  def channels(self) -> str | None:
    """The channel policy it reads clips with (None for a concatenation model, which reads none)."""
    if self.config is None:
      return None
    return channels_lib.check_policy(self.config.data.get("channels", channels_lib.LEGACY))

  @property
  def all_layers(self) -> bool:
    """Whether its embeddings carry every layer's output (what it is embedded with)."""
    return self.layers == "all"


@dataclasses.dataclass(frozen=True)
class SystemSpec:
  """A fixed-weight linear fusion: `weights[key]` for each model key (zero weights kept)."""

  name: str
  weights: dict[str, float]
  reduced: bool = False  # some named models were not run; the others' weights were renormalised
  note: str = ""


def _set_data(config: ml_collections.ConfigDict, root: str, channels: str) -> ml_collections.ConfigDict:
  """A copy of a model's config reading the pipeline's dataset `root`, with the pipeline's channel policy when
  one is given (`channels`; "" keeps the model's own)."""
  config = ml_collections.ConfigDict(config.to_dict())
  if "data" not in config:
    config.data = ml_collections.ConfigDict()
  config.data.root = root
  if channels:
    config.data.channels = channels
  return config


def _set_init_checkpoints(config: ml_collections.ConfigDict, init: Mapping[str, str]) -> None:
  """Fills empty encoder checkpoint fields from the pipeline's `init` paths (by encoder name)."""
  model = config.get("model")
  if model is None:
    return
  network = model.get("network")
  if network in init and init[network] and "init_checkpoint" in model and not model.init_checkpoint:
    model.init_checkpoint = init[network]
  for name, path in init.items():  # Two-encoder models: model.<name>_checkpoint.
    field = f"{name}_checkpoint"
    if path and field in model and not model[field]:
      model[field] = path


def model_specs(config: ml_collections.ConfigDict) -> list[ModelSpec]:
  """The models of `config.model_keys`, in that order, with the data root and checkpoints filled in.

  Raises ValueError for an unknown key, an entry that is not exactly one kind, a source that is not run before
  its concatenation model, a bad `layers` value, or models that would read clips with different channel
  policies (see the module docstring).
  """
  keys = [k.strip() for k in str(config.model_keys).split(",") if k.strip()]
  if not keys:
    raise ValueError("config.model_keys is empty")
  unknown = [k for k in keys if k not in config.models]
  if unknown:
    raise ValueError(f"config.model_keys names {unknown}, not in config.models ({sorted(config.models.keys())})")
  root = os.path.abspath(config.data.root) if config.data.root else ""
  channels = config.data.get("channels", "")
  if channels:
    channels_lib.check_policy(channels)
  init = dict(config.get("init", {}) or {})
  base_scorer = config.scorer.to_dict()
  system_names = set(config.system_models)
  specs: list[ModelSpec] = []
  for key in keys:
    entry = config.models[key]
    layers = entry.get("layers", "last")
    if layers not in features.LAYER_MODES:
      raise ValueError(f"config.models.{key}.layers={layers!r}; expected one of {features.LAYER_MODES}")
    scorer = {**base_scorer, **(entry.get("scorer", None) or {})}
    sources = tuple(s.strip() for s in str(entry.get("sources", "") or "").split(",") if s.strip())
    if entry.get("train", None) is not None:
      raise ValueError(f"config.models.{key}.train: that field is now config.models.{key}.fine_tune")
    fine_tune, frozen = entry.get("fine_tune", None), entry.get("frozen", None)
    given = [what for what, present in (("fine_tune", fine_tune is not None), ("frozen", frozen is not None),
                                        ("sources", bool(sources))) if present]
    if len(given) != 1:
      raise ValueError(f"config.models.{key}: give exactly one of `fine_tune` (a fine-tuning config), `frozen` (a "
                       f"network embedded without training) or `sources` (models to concatenate); found {given}")
    if sources:
      missing = [s for s in sources if s not in [p.key for p in specs]]
      if missing:
        raise ValueError(f"config.models.{key}.sources names {missing}: they must be listed in "
                         f"config.model_keys before {key!r} (model_keys: {keys})")
      if any(not p.embedded for p in specs if p.key in sources):
        raise ValueError(f"config.models.{key}: sources must be models with embeddings of their own")
      kind, model_config = CONCATENATION, None
    else:
      kind, model_config = (FINE_TUNED, fine_tune) if fine_tune is not None else (FROZEN, frozen)
      model_config = _set_data(model_config, root, channels)
      if entry.get("init", True):  # False: keep the model's own (e.g. random-init) encoder
        _set_init_checkpoints(model_config, init)
    name = entry.get("name", key)
    specs.append(ModelSpec(key=key, name=name, kind=kind, config=model_config, sources=sources, layers=layers,
                           scorer=scorer, reference=name not in system_names))
  channel_policy(specs)
  return specs


def channel_policy(specs: Sequence[ModelSpec]) -> str:
  """The one channel policy the embedded models of `specs` read clips with.

  Raises ValueError naming each model's policy when they differ (see the module docstring)."""
  found = {s.key: s.channels for s in specs if s.embedded}
  policies = sorted(set(found.values()))
  if len(policies) != 1:
    listed = ", ".join(f"{k}: {v}" for k, v in found.items())
    raise ValueError(f"the models read clips with different channel policies ({listed}); a pipeline, and the "
                     "detector it exports, reads every clip with one policy: set --config.data.channels=POLICY "
                     f"(one of {', '.join(channels_lib.POLICIES)}) for all of them")
  return policies[0]


def system_specs(config: ml_collections.ConfigDict, specs: Sequence[ModelSpec]) -> list[SystemSpec]:
  """The fixed-weight systems of `config.systems`, mapped onto the models that are run.

  `config.system_models` lists model names; each `config.systems.<name>` lists one weight per name.
  """
  names = list(config.system_models)
  by_name = {s.name: s.key for s in specs}
  out = []
  for system in sorted(config.systems.keys()):
    weights = list(config.systems[system])
    if len(weights) != len(names):
      raise ValueError(f"config.systems.{system} has {len(weights)} weights for {len(names)} models {names}")
    kept = {by_name[n]: float(w) for n, w in zip(names, weights) if n in by_name}
    dropped = [n for n, w in zip(names, weights) if n not in by_name and w != 0.0]
    total = sum(kept.values())
    if total <= 0.0:
      out.append(SystemSpec(system, kept, reduced=True, note=f"skipped: all its weight is on {dropped}"))
      continue
    note = ""
    if dropped:
      kept = {k: w / total for k, w in kept.items()}
      note = f"reduced: {', '.join(dropped)} not run; other weights renormalised to sum 1"
    out.append(SystemSpec(system, kept, reduced=bool(dropped), note=note))
  return out
