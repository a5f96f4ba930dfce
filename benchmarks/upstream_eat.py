"""Imports upstream EAT (a user's clone of github.com/cwx-worst-one/EAT) without fairseq, timm or omegaconf.

Upstream's model (`models/EAT_pretraining.py` with `base.py`, `images.py`, `modules.py`, `mae.py`) is
plain PyTorch, but those files import names from fairseq, timm and omegaconf. fairseq does not install on
Python 3.11 with NumPy 2, and timm/omegaconf are not dependencies of this project. For each of the three
packages that is not importable, `install_stand_ins` registers small stand-in modules in `sys.modules`
holding just the names upstream imports. Everything else upstream runs, inference (`extract_features`) and
pre-training (`forward` with masks, the EMA teacher), stays upstream's own code. The stand-ins are written
here from the behaviour of the fairseq / timm versions upstream uses:
- run by the forward passes, exact: timm's `Mlp` (`fc1 -> act -> dropout -> fc2 -> dropout`, with timm's
  identity `norm` before fc2; every block builds one); for the pretraining decoder fairseq's `LayerNorm` (a
  `torch.nn.LayerNorm`, eps 1e-5), `SamePad` / `SamePad2d` (drop the last step / row and column after an even
  kernel) and `TransposeLast` (swap a dimension with the last); `GradMultiply` (identity forward, gradient times
  a scale) and `index_put` (`tensor[mask] = value`);
- run by pre-training around the forward pass, exact: fairseq's `EMAModule` / `EMAModuleConfig` (float32
  copy of the teacher's state; `step` moves every trained parameter the teacher has towards the student's,
  `ema = ema * (1 - (1 - decay)) + student * (1 - decay)`, copies untrained ones, skips what the teacher
  lacks; no apex, so no norm logs) and `BaseFairseqModel.set_num_updates` (passed on to submodules);
- run while the model is built: `FairseqDataclass` (a dataclass base with `_name`), `register_model`
  (returns the class), `init_bert_params` (fairseq's N(0, 0.02) init of Linear weights, zero biases),
  `to_2tuple` (timm's), `II` / `MISSING` (omegaconf's interpolation string and `"???"`);
- never reached with EAT's settings (masks are passed in, as upstream's data loader precomputes them; drop
  path is 0); using one raises `NotImplementedError`: `compute_mask_indices`, `DropPath`, timm's
  `PatchEmbed`, `Block`, `Attention`, fairseq's `TransformerSentenceEncoderLayer`, `FairseqTask`.
The slow `test_upstream_eat_with_stand_ins_reproduces_the_fixture` checks that upstream built this way
reproduces the EAT fixtures made with the real fairseq and timm. Upstream's own block-mask generator
(`utils/data_utils.py`, NumPy and PyTorch only) is imported by `import_upstream_mask_generator`.

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
    raise NotImplementedError(f"{qualname} is a stand-in (benchmarks/upstream_eat.py) for a part of fairseq/timm "
                              "that EAT's settings never reach (drop path 0, masks passed in)")

  return type(qualname.rsplit(".", 1)[-1], (), {"__init__": refuse, "apply": staticmethod(refuse),
                                                "__module__": qualname.rsplit(".", 1)[0]})


def _refusing_function(qualname: str) -> Callable[..., Any]:
  def refuse(*args, **kwargs):
    raise NotImplementedError(f"{qualname} is a stand-in (benchmarks/upstream_eat.py): EAT computes its masks with "
                              "compute_block_mask_2d (or takes them precomputed), never with this")

  refuse.__qualname__ = refuse.__name__ = qualname.rsplit(".", 1)[-1]
  return refuse


def _fairseq_modules() -> dict[str, types.ModuleType]:
  import copy

  import torch
  from torch import nn

  @dataclasses.dataclass
  class FairseqDataclass:
    _name: Optional[str] = None

  class BaseFairseqModel(nn.Module):
    def set_num_updates(self, num_updates):
      for module in self.modules():
        if module is not self and hasattr(module, "set_num_updates"):
          module.set_num_updates(num_updates)

  def register_model(name, dataclass=None):
    del name, dataclass
    return lambda cls: cls

  def init_bert_params(module):
    """fairseq's BERT init for the layers EAT has: Linear weights N(0, 0.02), biases zero."""
    if isinstance(module, nn.Linear):
      module.weight.data.normal_(mean=0.0, std=0.02)
      if module.bias is not None:
        module.bias.data.zero_()

  def layer_norm(normalized_shape, eps=1e-5, elementwise_affine=True, export=False):
    del export  # fairseq picks apex's fused kernel on GPU when installed; the maths is torch's LayerNorm
    return nn.LayerNorm(normalized_shape, eps, elementwise_affine)

  class SamePad(nn.Module):
    """Drops the last time step after an even-kernel (or all but the first after a causal) convolution."""

    def __init__(self, kernel_size, causal=False):
      super().__init__()
      self.remove = kernel_size - 1 if causal else int(kernel_size % 2 == 0)

    def forward(self, x):
      return x[:, :, :-self.remove] if self.remove else x

  class SamePad2d(nn.Module):
    """Drops the last row and column of `[B, C, H, W]` after an even-kernel 2-D convolution."""

    def __init__(self, kernel_size):
      super().__init__()
      self.remove = int(kernel_size % 2 == 0)

    def forward(self, x):
      assert x.dim() == 4
      return x[:, :, :-self.remove, :-self.remove] if self.remove else x

  class TransposeLast(nn.Module):
    """Swaps dimension `tranpose_dim` (sic, fairseq's name) with the last, after optionally indexing."""

    def __init__(self, deconstruct_idx=None, tranpose_dim=-2):
      super().__init__()
      self.deconstruct_idx = deconstruct_idx
      self.tranpose_dim = tranpose_dim

    def forward(self, x):
      if self.deconstruct_idx is not None:
        x = x[self.deconstruct_idx]
      return x.transpose(self.tranpose_dim, -1)

  class GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
      ctx.scale = scale
      return x.clone()

    @staticmethod
    def backward(ctx, grad):
      return grad * ctx.scale, None

  def index_put(tensor, indices, value):
    tensor[indices] = value
    return tensor

  @dataclasses.dataclass
  class EMAModuleConfig(FairseqDataclass):
    ema_decay: float = 0.9999
    ema_fp32: bool = False
    add_missing_params: bool = True
    log_norms: bool = False

  class EMAModule:
    """fairseq's EMA of a module's parameters (no apex here: `logs` stays empty)."""

    def __init__(self, model, config, copy_model=True, device=None, skip_keys=None):
      self.config = config
      self.model = model
      if copy_model:
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
      if device is not None:
        self.model = self.model.to(device=device)
      self.decay = config.ema_decay
      self.skip_keys = set(skip_keys or ())
      self.add_missing_params = config.add_missing_params
      self.fp32_params = {}
      self.logs = {}
      if config.ema_fp32:
        self.build_fp32_params()

    def build_fp32_params(self, state_dict=None):
      if not self.config.ema_fp32:
        raise RuntimeError("build_fp32_params needs ema_fp32=True")
      state_dict = self.model.state_dict() if state_dict is None else state_dict
      for key, value in state_dict.items():
        if key in self.fp32_params:
          self.fp32_params[key].copy_(value)
        else:
          self.fp32_params[key] = value.float() if torch.is_floating_point(value) else value

    def restore(self, state_dict, build_fp32_params=False):
      self.model.load_state_dict(state_dict, strict=False)
      if build_fp32_params:
        self.build_fp32_params(state_dict)

    def set_decay(self, decay, weight_decay=None):
      self.decay = decay
      if weight_decay is not None:
        self.weight_decay = weight_decay

    def get_decay(self):
      return self.decay

    @torch.no_grad()
    def step(self, new_model):
      rate = 1 - self.decay
      params = self.fp32_params if self.config.ema_fp32 else self.model.state_dict()
      moved = {}
      for key, param in new_model.named_parameters():
        if key not in params:
          if not self.add_missing_params:
            continue  # e.g. the student's decoder: the teacher has none
          params[key] = param.float().clone() if param.ndim == 1 else copy.deepcopy(param)
        target = params[key]
        if param.shape != target.shape:
          raise ValueError(f"EMA: shapes differ for {key}: {tuple(param.shape)} vs {tuple(target.shape)}")
        if "version" in key:
          continue
        if key in self.skip_keys or not param.requires_grad:
          target.copy_(param.to(dtype=target.dtype).data)
        else:
          target.mul_(1 - rate)
          target.add_(param.data.to(dtype=target.dtype), alpha=rate)
        moved[key] = target
      moved.update(dict(new_model.named_buffers()))
      self.restore(moved, build_fp32_params=False)

  root = types.ModuleType("fairseq")
  modules = {"fairseq": root}

  def add(name, **names):
    module = types.ModuleType(name)
    module.__dict__.update(names)
    modules[name] = module

  add("fairseq.dataclass", FairseqDataclass=FairseqDataclass)
  add("fairseq.models", BaseFairseqModel=BaseFairseqModel, register_model=register_model)
  add("fairseq.modules", EMAModule=EMAModule, EMAModuleConfig=EMAModuleConfig, GradMultiply=GradMultiply,
      LayerNorm=layer_norm, SamePad=SamePad, SamePad2d=SamePad2d, TransposeLast=TransposeLast)
  add("fairseq.modules.transformer_sentence_encoder", init_bert_params=init_bert_params)
  add("fairseq.data")
  add("fairseq.data.data_utils",
      compute_mask_indices=_refusing_function("fairseq.data.data_utils.compute_mask_indices"))
  add("fairseq.utils", index_put=index_put)
  add("fairseq.tasks", FairseqTask=_raises("fairseq.tasks.FairseqTask"))
  add("fairseq.models.wav2vec")
  add("fairseq.models.wav2vec.wav2vec2",
      TransformerSentenceEncoderLayer=_raises("fairseq.models.wav2vec.wav2vec2.TransformerSentenceEncoderLayer"))
  return modules


def _timm_modules() -> dict[str, types.ModuleType]:
  from torch import nn

  class Mlp(nn.Module):
    """timm's `Mlp` as EAT builds it: fc1 -> act -> dropout -> norm (an identity: no norm layer) -> fc2 -> dropout,
    biases on. The submodules are timm's, in its order, so a state_dict's module metadata is the same too."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
      super().__init__()
      hidden_features = hidden_features or in_features
      self.fc1 = nn.Linear(in_features, hidden_features)
      self.act = act_layer()
      self.drop1 = nn.Dropout(drop)
      self.norm = nn.Identity()
      self.fc2 = nn.Linear(hidden_features, out_features or in_features)
      self.drop2 = nn.Dropout(drop)

    def forward(self, x):
      return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))

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


def build_model(upstream: types.ModuleType, model_cfg: Mapping[str, Any], *, pretraining: bool = False) -> Any:
  """Upstream `Data2VecMultiModel` from a fairseq `cfg["model"]` dict: for inference (eval mode, no EMA
  teacher; the state_dict has the released layout minus `_ema`) or, with `pretraining`, in training mode
  with its EMA teacher (the full released layout, `_ema` included).

  `model_cfg` is the form fairseq checkpoints store (plain nested dict, enums as names); missing fields take
  upstream's dataclass defaults.
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
  model = upstream.Data2VecMultiModel(cfg, [upstream.Modality.IMAGE], skip_ema=not pretraining)
  return model.train() if pretraining else model.eval()


def import_upstream_mask_generator(path: str | pathlib.Path) -> types.ModuleType:
  """Upstream's `utils/data_utils.py` (home of `compute_block_mask_2d`) from a clone, as its own module."""
  file = pathlib.Path(path).expanduser().resolve() / "utils" / "data_utils.py"
  if not file.is_file():
    raise FileNotFoundError(f"{file} not found (a clone of github.com/cwx-worst-one/EAT has utils/data_utils.py)")
  spec = importlib.util.spec_from_file_location("upstream_eat_data_utils", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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
