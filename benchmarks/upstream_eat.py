"""Imports upstream EAT (a user's clone of github.com/cwx-worst-one/EAT) without fairseq, timm or omegaconf.

Upstream's encoder (`models/EAT_pretraining.py` with `base.py`, `images.py`, `modules.py`, `mae.py`) is
plain PyTorch, but those files import names from fairseq, timm and omegaconf. fairseq does not install on
Python 3.11 with NumPy 2, and timm/omegaconf are not dependencies of this project. For each of the three
packages that is not importable, `install_stand_ins` registers small stand-in modules in `sys.modules`
holding just the names upstream imports. What inference runs (`extract_features(..., mask=False)`) stays
upstream's own code, with one exception: timm's `Mlp` (`fc1 -> GELU -> dropout -> fc2 -> dropout`), which
every block builds; its stand-in is the same two `nn.Linear` layers around upstream's `act_layer`
(`nn.GELU`), so parameter names and outputs are timm's (the slow
`test_upstream_eat_with_stand_ins_reproduces_the_fixture` checks that upstream built this way reproduces the
EAT fixtures made with the real fairseq and timm). The others are:
- run while the model is built, never at inference: `FairseqDataclass` (a dataclass base with `_name`),
  `register_model` (returns the class), `BaseFairseqModel` (`nn.Module`), `init_bert_params` (fairseq's
  N(0, 0.02) init of Linear weights, zero biases), `to_2tuple` (timm's), `II` / `MISSING` (omegaconf's
  interpolation string and `"???"`);
- built as parameter-free modules of the pretraining decoder, which inference never calls (calling one
  raises): `LayerNorm`, `SamePad`, `SamePad2d`, `TransposeLast`;
- reached only in pretraining (masking, EMA teacher, drop path, gradient scaling) or by other models in
  those files; using one raises `NotImplementedError`: `EMAModule`, `EMAModuleConfig`, `compute_mask_indices`,
  `index_put`, `GradMultiply`, `DropPath`, timm's `PatchEmbed`, `Block`, `Attention`, fairseq's
  `TransformerSentenceEncoderLayer`, `FairseqTask`.

Python 3.11 also refuses upstream's config dataclasses as written (a dataclass instance as a field default,
e.g. `decoder: D2vDecoderConfig = D2vDecoderConfig()`, is "mutable" since 3.11, with or without fairseq).
While upstream's files are imported, `dataclasses.dataclass` gives upstream's config classes identity
hashing, which is what Python 3.10 accepted; nothing else changes and the original is restored afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import math
import pathlib
import sys
import types
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, Optional

PACKAGE = "upstream_eat_models"  # the name upstream's `models/` folder is imported under
UPSTREAM_FILES = ("EAT_pretraining.py", "base.py", "images.py", "modules.py", "mae.py")
STAND_IN_PACKAGES = ("fairseq", "timm", "omegaconf")
IS_STAND_IN = "__asd_jax_stand_in__"  # module attribute marking a stand-in


def _raises(qualname: str) -> Any:
  """A class standing in for `qualname` that cannot be used: its construction and `apply` raise."""

  def refuse(*args, **kwargs):
    raise NotImplementedError(f"{qualname} is a stand-in (benchmarks/upstream_eat.py): upstream EAT reaches it "
                              "only in pretraining (masking, EMA teacher, drop path), not in extract_features")

  return type(qualname.rsplit(".", 1)[-1], (), {"__init__": refuse, "apply": staticmethod(refuse),
                                                "__module__": qualname.rsplit(".", 1)[0]})


def _refusing_function(qualname: str) -> Callable[..., Any]:
  def refuse(*args, **kwargs):
    raise NotImplementedError(f"{qualname} is a stand-in (benchmarks/upstream_eat.py): upstream EAT reaches it "
                              "only in pretraining masking, not in extract_features(mask=False)")

  refuse.__qualname__ = refuse.__name__ = qualname.rsplit(".", 1)[-1]
  return refuse


def _fairseq_modules() -> dict[str, types.ModuleType]:
  from torch import nn

  @dataclasses.dataclass
  class FairseqDataclass:
    _name: Optional[str] = None

  class BaseFairseqModel(nn.Module):
    pass

  def register_model(name, dataclass=None):
    del name, dataclass
    return lambda cls: cls

  def init_bert_params(module):
    """fairseq's BERT init for the layers EAT has: Linear weights N(0, 0.02), biases zero."""
    if isinstance(module, nn.Linear):
      module.weight.data.normal_(mean=0.0, std=0.02)
      if module.bias is not None:
        module.bias.data.zero_()

  class BuildOnly(nn.Module):
    """A parameter-free module of the pretraining decoder; inference never runs it."""

    def __init__(self, *args, **kwargs):
      super().__init__()

    def forward(self, *args, **kwargs):
      raise NotImplementedError(f"{type(self).__name__} is a stand-in (benchmarks/upstream_eat.py) for a module of "
                                "EAT's pretraining decoder, which extract_features does not run")

  def build_only(name):
    return type(name, (BuildOnly,), {})

  root = types.ModuleType("fairseq")
  modules = {"fairseq": root}

  def add(name, **names):
    module = types.ModuleType(name)
    module.__dict__.update(names)
    modules[name] = module

  add("fairseq.dataclass", FairseqDataclass=FairseqDataclass)
  add("fairseq.models", BaseFairseqModel=BaseFairseqModel, register_model=register_model)
  add("fairseq.modules", EMAModule=_raises("fairseq.modules.EMAModule"),
      EMAModuleConfig=_raises("fairseq.modules.EMAModuleConfig"),
      GradMultiply=_raises("fairseq.modules.GradMultiply"),
      LayerNorm=build_only("LayerNorm"), SamePad=build_only("SamePad"), SamePad2d=build_only("SamePad2d"),
      TransposeLast=build_only("TransposeLast"))
  add("fairseq.modules.transformer_sentence_encoder", init_bert_params=init_bert_params)
  add("fairseq.data")
  add("fairseq.data.data_utils",
      compute_mask_indices=_refusing_function("fairseq.data.data_utils.compute_mask_indices"))
  add("fairseq.utils", index_put=_refusing_function("fairseq.utils.index_put"))
  add("fairseq.tasks", FairseqTask=_raises("fairseq.tasks.FairseqTask"))
  add("fairseq.models.wav2vec")
  add("fairseq.models.wav2vec.wav2vec2",
      TransformerSentenceEncoderLayer=_raises("fairseq.models.wav2vec.wav2vec2.TransformerSentenceEncoderLayer"))
  return modules


def _timm_modules() -> dict[str, types.ModuleType]:
  from torch import nn

  class Mlp(nn.Module):
    """timm's `Mlp` as EAT builds it: fc1 -> act -> dropout -> fc2 -> dropout (no norm, biases on)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
      super().__init__()
      hidden_features = hidden_features or in_features
      self.fc1 = nn.Linear(in_features, hidden_features)
      self.act = act_layer()
      self.drop1 = nn.Dropout(drop)
      self.fc2 = nn.Linear(hidden_features, out_features or in_features)
      self.drop2 = nn.Dropout(drop)

    def forward(self, x):
      return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))

  def to_2tuple(x):
    if isinstance(x, Iterable) and not isinstance(x, str):
      return tuple(x)
    return (x, x)

  modules = {name: types.ModuleType(name) for name in ("timm", "timm.models")}
  modules["timm.models.layers"] = types.ModuleType("timm.models.layers")
  modules["timm.models.layers"].to_2tuple = to_2tuple
  vit = types.ModuleType("timm.models.vision_transformer")
  vit.Mlp = Mlp
  for name in ("DropPath", "PatchEmbed", "Block", "Attention"):
    setattr(vit, name, _raises(f"timm.models.vision_transformer.{name}"))
  modules["timm.models.vision_transformer"] = vit
  return modules


def _omegaconf_modules() -> dict[str, types.ModuleType]:
  module = types.ModuleType("omegaconf")
  module.MISSING = "???"
  module.II = lambda interpolation: "${" + interpolation + "}"
  return {"omegaconf": module}


_STAND_INS = {"fairseq": _fairseq_modules, "timm": _timm_modules, "omegaconf": _omegaconf_modules}


def stand_in_modules(package: str) -> dict[str, types.ModuleType]:
  """Stand-in modules (dotted name -> module) for one of `STAND_IN_PACKAGES`, each marked `IS_STAND_IN`."""
  modules = _STAND_INS[package]()
  for module in modules.values():
    setattr(module, IS_STAND_IN, True)
  return modules


def stand_ins_in_use(modules: Mapping[str, types.ModuleType] | None = None) -> list[str]:
  """Those of `STAND_IN_PACKAGES` whose entry in `modules` (default `sys.modules`) is one of these stand-ins."""
  modules = sys.modules if modules is None else modules
  return [name for name in STAND_IN_PACKAGES if getattr(modules.get(name), IS_STAND_IN, False)]


def missing_packages(is_installed: Callable[[str], bool] | None = None) -> list[str]:
  """Those of `STAND_IN_PACKAGES` that cannot be imported (default test: `importlib.util.find_spec`)."""
  if is_installed is None:
    is_installed = lambda name: name in sys.modules or importlib.util.find_spec(name) is not None
  return [name for name in STAND_IN_PACKAGES if not is_installed(name)]


def install_stand_ins(modules: MutableMapping[str, types.ModuleType] | None = None,
                      is_installed: Callable[[str], bool] | None = None) -> list[str]:
  """Registers stand-ins in `modules` (default `sys.modules`) for the missing packages only.

  An entry already in `modules` is never replaced. Returns the packages that got stand-ins.
  """
  modules = sys.modules if modules is None else modules
  missing = missing_packages(is_installed)
  for package in missing:
    for name, module in stand_in_modules(package).items():
      modules.setdefault(name, module)
  return missing


@contextlib.contextmanager
def dataclass_instances_allowed_as_defaults(module_prefix: str):
  """While active, dataclasses defined in modules under `module_prefix` hash by identity (Python 3.10's rule).

  Python 3.11 rejects an unhashable default such as `field: Config = Config()`; upstream EAT's config
  classes use that pattern. Classes of other modules are untouched; the original decorator is restored.
  """
  original = dataclasses.dataclass

  def dataclass(cls=None, /, **kwargs):
    def wrap(c):
      c = original(c, **kwargs)
      if c.__module__.startswith(module_prefix) and c.__hash__ is None:
        c.__hash__ = object.__hash__
      return c

    return wrap if cls is None else wrap(cls)

  dataclasses.dataclass = dataclass
  try:
    yield
  finally:
    dataclasses.dataclass = original


def import_upstream_eat(path: str | pathlib.Path) -> types.ModuleType:
  """Upstream `models/EAT_pretraining.py` from `path` (a clone of cwx-worst-one/EAT), stand-ins as needed."""
  path = pathlib.Path(path).expanduser().resolve()
  folder = path / "models"
  missing = [name for name in UPSTREAM_FILES if not (folder / name).is_file()]
  if missing:
    raise FileNotFoundError(f"--upstream_eat={path}: expected upstream's models/{', models/'.join(missing)} there "
                            "(a clone of github.com/cwx-worst-one/EAT)")
  if PACKAGE not in sys.modules:
    install_stand_ins()
    init = folder / "__init__.py"
    spec = importlib.util.spec_from_file_location(PACKAGE, init if init.is_file() else None,
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    if init.is_file():
      spec.loader.exec_module(package)
  elif pathlib.Path(sys.modules[PACKAGE].__path__[0]).resolve() != folder:
    raise RuntimeError(f"upstream EAT was already imported from {sys.modules[PACKAGE].__path__[0]}, not {folder}")
  with dataclass_instances_allowed_as_defaults(PACKAGE + "."):
    return importlib.import_module(PACKAGE + ".EAT_pretraining")


def _dataclass_from(cls: type, values: Mapping[str, Any], where: str, **nested: Any) -> Any:
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"{where}: fields {unknown} are not in upstream's {cls.__name__}")
  return cls(**{**values, **nested})


def build_model(upstream: types.ModuleType, model_cfg: Mapping[str, Any]) -> Any:
  """Upstream `Data2VecMultiModel` (eval mode, no EMA teacher) from a fairseq `cfg["model"]` dict.

  `model_cfg` is the form fairseq checkpoints store (plain nested dict, enums as names); missing fields take
  upstream's dataclass defaults. The state_dict has the released layout minus `_ema`.
  """
  images = sys.modules[PACKAGE + ".images"]
  modules = sys.modules[PACKAGE + ".modules"]
  model_cfg = dict(model_cfg)
  image = dict(model_cfg.pop("modalities", {}).get("image", {}))
  decoder = image.pop("decoder", {})
  if "type" in image:
    image["type"] = images.Modality[image["type"]]
  image_cfg = _dataclass_from(
      images.D2vImageConfig, image, "model.modalities.image",
      decoder=None if decoder is None else _dataclass_from(modules.D2vDecoderConfig, decoder,
                                                           "model.modalities.image.decoder"))
  if model_cfg.get("supported_modality") is not None:
    model_cfg["supported_modality"] = upstream.Modality[model_cfg["supported_modality"]]
  if model_cfg.get("shared_decoder") is not None:
    model_cfg["shared_decoder"] = _dataclass_from(modules.D2vDecoderConfig, model_cfg["shared_decoder"],
                                                  "model.shared_decoder")
  model_cfg.setdefault("supported_modality", upstream.Modality.IMAGE)
  cfg = _dataclass_from(upstream.Data2VecMultiConfig, model_cfg, "model",
                        modalities=upstream.D2vModalitiesConfig(image=image_cfg))
  return upstream.Data2VecMultiModel(cfg, [upstream.Modality.IMAGE], skip_ema=True).eval()


def pretraining_model_cfg(config: Any, decoder_kernel: int | None = None, decoder_layers: int | None = None
                          ) -> dict[str, Any]:
  """The `model` group of upstream's `config/pretraining_AS2M*.yaml` for an `eat.EATConfig`'s sizes.

  Only fields that config sets (the rest are upstream's defaults). The CNN decoder (which inference ignores)
  follows the released models: 6 layers of kernel 3 for base (dim 768), 3 of kernel 5 for large (dim 1024).
  """
  large = config.embed_dim >= 1024
  return {
      "depth": config.depth, "embed_dim": config.embed_dim, "num_heads": config.num_heads,
      "mlp_ratio": config.mlp_ratio, "norm_eps": config.norm_eps, "average_top_k_layers": config.depth,
      "encoder_dropout": 0.0, "post_mlp_drop": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
      "end_of_block_targets": False, "ema_encoder_only": False, "supported_modality": "IMAGE",
      "modalities": {"image": {
          "in_chans": config.in_chans, "patch_size": config.patch_size, "embed_dim": config.embed_dim,
          "num_extra_tokens": config.num_extra_tokens, "prenet_depth": 0, "init_extra_token_zero": False,
          "use_alibi_encoder": False, "fixed_positions": True, "target_length": config.target_length,
          "max_length": math.ceil(config.max_positions / config.freq_patches),
          "decoder": {"decoder_dim": config.embed_dim, "decoder_groups": 16,
                      "decoder_kernel": decoder_kernel or (5 if large else 3),
                      "decoder_layers": decoder_layers or (3 if large else 6), "input_dropout": 0.0},
      }},
  }
