r"""Writes every reference fixture of `tests/fixtures/` from upstream BEATs and EAT (for maintainers; needs clones).

  pip download --no-deps --only-binary=:all: torchaudio==2.11.0 -d /tmp/ta   # its kaldi.py is all that is read
  python -m benchmarks.make_reference_fixtures --upstream_beats=/path/to/unilm/beats \
      --upstream_eat=/path/to/EAT --torchaudio=/tmp/ta/torchaudio-2.11.0-*.whl [--out=tests/fixtures]

The clones are microsoft/unilm (its `beats/` folder) and cwx-worst-one/EAT at the snapshots `UPSTREAM` names;
upstream's code is imported from them at run time (`benchmarks/upstream_beats.py`, and `upstream_eat.py` with its
stand-ins for fairseq, timm and omegaconf) and is no part of this project. What runs, all on CPU in float32:
- BEATs: upstream's `BEATs` built with the released iter3+ config at tiny sizes (`BEATS_TINY`) under
  `torch.manual_seed(1234)`; then, under seed 1235, N(0, 0.02) noise on every distinct state_dict tensor in
  state_dict order (the relative-position table that all layers share once), then, in the same order, the
  extra noise of `BEATS_EXTRA_STD` on the gated relative-position tensors (at 0.02 alone they hardly change the
  outputs). `beats_tiny_io.npz` is upstream's `extract_features` on the clips with its own `preprocess` (the
  Kaldi fbank of the given torchaudio file), intermediate tensors taken with forward hooks.
- EAT: the fairseq config of `config/pretraining_AS2M.yaml` (groups as in the file, `model` as upstream's
  dataclasses with the file's values, `common.user_dir` a placeholder) at tiny sizes (`EAT_TINY`); upstream's
  pre-training model (student, EMA teacher, decoder) built under seed 4321; under seed 4322 N(0, 0.02) noise on
  every state_dict tensor, then separate noise on each `_ema` teacher tensor. `eat_tiny_io.npz`: the fbank of
  upstream's `feature_extract/feature_extract.py` (mean removed, Kaldi fbank, zero frames appended up to
  `EAT_TARGET_LENGTH`, normalised) and upstream's `extract_features`, hooks for the intermediate tensors. The
  HuggingFace port's form holds the same encoder tensors under its names (`hf_name`).
- `*_keys.json`: key, shape and parameter-count layouts of upstream's models at the released sizes (EAT built
  on PyTorch's meta device, shapes without weights).
- `eat_pretraining_tiny.npz`: `benchmarks/make_pretraining_fixture.py`, run on the EAT files just written.
- `manifest.json`: seeds, configs, upstream snapshots and every file's size, sha256 and arrays
  (`--manifest_only` rewrites just this file from the files in `--out`).

The two clips (`wav`, [2, 64000] float32, 16 kHz, 4 s) are an input, not an output: the recipe that synthesised
them was not kept with them, so they are read from `--wav_from` (by default the committed
`tests/fixtures/beats_tiny_io.npz`) and stored unchanged in both `*_io.npz` files.

With the same snapshots, torch 2.13.0 (CPU) and torchaudio 2.11.0's kaldi.py, the checkpoints (`.pt`,
`.safetensors`) and the JSON files come out byte-identical to the committed ones: they hold only what seeded
`randn`, elementwise adds and the configs give. The `.pt` files are torch zip archives whose inner folder is
named after the file, so every file is written under its final name in a staging folder and then moved into
place. The `.npz` arrays are the outputs of float32 FFTs, matrix products and convolutions, whose summation
order depends on the CPU's kernels and the thread count: they come out equal to `REGENERATED_RTOL` of each
array's largest magnitude (integer, mask and waveform arrays exactly), and so `manifest.json` differs only in
their sha256 and size. `tests/test_fixture_files.py::test_the_generator_reproduces_the_committed_fixtures`
regenerates everything into a temporary folder and checks exactly that.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import hashlib
import json
import math
import os
import pathlib
import re
import shutil
import tempfile
import typing
from collections.abc import Mapping
from typing import Any

import numpy as np
import yaml
from absl import app, flags

from asd_jax import atomic
from benchmarks import make_pretraining_fixture
from benchmarks import upstream_beats
from benchmarks import upstream_eat

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures"

UPSTREAM = {
    "beats": "microsoft/unilm@768a3c873f598bb9b4d4dfb9267b099e35f8fe56 beats/",
    "eat": "cwx-worst-one/EAT@06c1c34e2afd8dc35297e6d3815d31dbeec9d372",
    "kaldi_fbank": "torchaudio 2.11.0 wheel, torchaudio/compliance/kaldi.py",
    "torch": "2.13.0 (CPU)",
}
KALDI_SHA256 = "5cbea1a584ddea748f6f68a621d794e13334e88d9faa1d40986f7af32f196d29"  # torchaudio 2.11.0's kaldi.py

NOISE_STD = 0.02
WAV_SEED = 11  # the seed the clips were synthesised with (recorded; the clips themselves are read, see above)
SAMPLE_RATE = 16000

# The cfg of the released BEATs_iter3_plus_AS2M.pt, in its order.
BEATS_RELEASED_CFG = {
    "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12,
    "activation_fn": "gelu", "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
    "encoder_layerdrop": 0.05, "dropout_input": 0.0, "layer_norm_first": False, "conv_bias": False, "conv_pos": 128,
    "conv_pos_groups": 16, "relative_position_embedding": True, "num_buckets": 320, "max_distance": 800,
    "gru_rel_pos": True, "deep_norm": True, "input_patch_size": 16, "layer_wise_gradient_decay_ratio": 0.6,
    "embed_dim": 512, "finetuned_model": False,
}
BEATS_TINY = {"encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4,
              "embed_dim": 32}
BEATS_SEED = 1234
BEATS_EXTRA_STD = {"relative_attention_bias.weight": 1.0, "grep_linear.weight": 0.3, "grep_linear.bias": 0.5,
                   "grep_a": 0.5}
BEATS_FBANK_MEAN, BEATS_FBANK_STD, BEATS_WAV_SCALE = 15.41663, 6.55582, 32768

EAT_YAML = {"tiny": "config/pretraining_AS2M.yaml", "base": "config/pretraining_AS2M.yaml",
            "large": "config/pretraining_AS2M_large.yaml"}
EAT_TINY = {"depth": 2, "embed_dim": 64, "num_heads": 4, "average_top_k_layers": 2,
            "modalities": {"image": {"embed_dim": 64, "decoder": {"decoder_dim": 64}}}}
EAT_USER_DIR = "/path/to/EAT"  # the config's ${env:PWD}
EAT_SEED = 4321
EAT_TARGET_LENGTH = 400  # the next multiple of 16 above the clips' 398 frames
EAT_NORM_MEAN, EAT_NORM_STD = -4.268, 4.569

# Regenerated float arrays may differ from the committed ones by rounding (see the module docstring): a float32
# sum of K terms taken in another order moves by at most about K * 2^-24 of the terms' magnitude, which is 2^-16
# for K = 256, the length of these tiny models' typical contractions (patch conv, fc2, the fbank's 256 FFT bins).
# That is a worst case; typical differences grow as sqrt(K) and were ~1e-6 relative. A wrong seed, noise scale,
# config field or fbank setting moves arrays by 1e-3 or more.
REGENERATED_RTOL = 2.0 ** -16

# fairseq name prefix -> HuggingFace-port name prefix (worstchan/EAT-*: the `EATModel` wrapper's `model.`).
HF_PREFIXES = (("modality_encoders.IMAGE.context_encoder.norm.", "model.pre_norm."),
               ("modality_encoders.IMAGE.", "model."), ("blocks.", "model.blocks."))
EAT_DECODER_PREFIX = "modality_encoders.IMAGE.decoder."
EAT_POSITIONS = "modality_encoders.IMAGE.fixed_positional_encoder.positions"

KEYS_DESCRIPTION = {
    "beats": "state_dict keys/shapes of upstream BEATs built with the cfg of the released BEATs_iter3_plus_AS2M.pt "
             "(pretrained). No weights.",
    "eat": "Released EAT-{size} pretraining checkpoint layout (fairseq .pt) as built by the upstream "
           "cwx-worst-one/EAT code from {yaml}; and the HuggingFace safetensors key names of the same encoder. "
           "No weights.",
}
BEATS_TABLE_NOTE = ("encoder.layers.N.self_attn.relative_attention_bias.weight is ONE tensor shared by all "
                    "layers (layer 0's); it is listed once per layer in the state_dict.")


# ---------------------------------------------------------------------------------------------------------
# Helpers.

def _perturb(state: Mapping[str, Any], seed: int, extra_std: Mapping[str, float] | None = None) -> None:
  """In place: N(0, NOISE_STD) on each distinct tensor of `state` (state_dict order, one `randn` each, under
  `seed`), then `extra_std[suffix]`-scaled noise on the distinct tensors whose key ends with a suffix."""
  import torch

  distinct, seen = [], set()
  for key, tensor in state.items():
    if tensor.data_ptr() not in seen:  # a parameter several keys name is perturbed once
      seen.add(tensor.data_ptr())
      distinct.append((key, tensor))
  torch.manual_seed(seed)
  with torch.no_grad():
    for _, tensor in distinct:
      tensor.add_(NOISE_STD * torch.randn(tensor.shape))
    for key, tensor in distinct:
      std = [s for suffix, s in (extra_std or {}).items() if key.endswith(suffix)]
      if std:
        tensor.add_(std[0] * torch.randn(tensor.shape))


class _Recorder:
  """Forward hooks that keep named outputs (first element of a tuple output) as NumPy arrays."""

  def __init__(self):
    self.outputs, self._handles = {}, []

  def on(self, module: Any, name: str) -> None:
    def hook(_module, _inputs, output):
      self.outputs[name] = (output[0] if isinstance(output, tuple) else output).detach().numpy().copy()

    self._handles.append(module.register_forward_hook(hook))

  def close(self) -> None:
    for handle in self._handles:
      handle.remove()


def _layout(state: Mapping[str, Any]) -> list[dict[str, Any]]:
  return [{"key": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "numel": v.numel()}
          for k, v in state.items()]


def _on_meta(build):
  """`build()` on PyTorch's meta device: shapes without memory (tables upstream makes in NumPy stay on the CPU)."""
  import torch

  with torch.device("meta"):
    return build()


# ---------------------------------------------------------------------------------------------------------
# BEATs.

def beats_checkpoint(upstream: Any) -> tuple[dict[str, Any], Any]:
  """(`{"cfg", "model"}` as torch.save stores it, the upstream model in eval mode) of `beats_tiny.pt`."""
  import torch

  cfg = {**BEATS_RELEASED_CFG, **BEATS_TINY}
  torch.manual_seed(BEATS_SEED)
  model = upstream.BEATs(upstream.BEATsConfig(cfg))
  _perturb(model.state_dict(), BEATS_SEED + 1, BEATS_EXTRA_STD)
  return {"cfg": cfg, "model": model.state_dict()}, model.eval()


def beats_io(model: Any, wav: np.ndarray) -> dict[str, np.ndarray]:
  """Upstream's fbank, patch tokens, encoder input, every layer's output and features for `wav` [B, samples]."""
  import torch

  recorder = _Recorder()
  recorder.on(model.post_extract_proj, "patch_tokens")
  recorder.on(model.encoder.layer_norm, "encoder_input")
  for i, layer in enumerate(model.encoder.layers):
    recorder.on(layer, f"layer{i}")
  try:
    with torch.inference_mode():
      source = torch.from_numpy(wav)
      fbank = model.preprocess(source, fbank_mean=BEATS_FBANK_MEAN, fbank_std=BEATS_FBANK_STD).numpy()
      features = model.extract_features(source, padding_mask=None)[0].numpy()
  finally:
    recorder.close()
  out = recorder.outputs
  layers = np.stack([out[f"layer{i}"].transpose(1, 0, 2) for i in range(len(model.encoder.layers))])  # T,B,C -> B,T,C
  return {"wav": wav, "fbank": fbank, "patch_tokens": out["patch_tokens"], "encoder_input": out["encoder_input"],
          "layer_outputs": layers, "features": features}


def beats_full_keys(upstream: Any) -> dict[str, Any]:
  """Layout of upstream BEATs at the released size (`beats_full_keys.json`)."""
  model = upstream.BEATs(upstream.BEATsConfig(dict(BEATS_RELEASED_CFG)))  # its init copies via the CPU: not on meta
  state = model.state_dict()
  return {"description": KEYS_DESCRIPTION["beats"], "cfg": dict(BEATS_RELEASED_CFG), "num_keys": len(state),
          "state_dict_total_numel": sum(v.numel() for v in state.values()),
          "unique_parameter_count": sum(p.numel() for p in model.parameters()),
          "note": BEATS_TABLE_NOTE, "keys": _layout(state)}


# ---------------------------------------------------------------------------------------------------------
# EAT.

class _OmegaConfYaml(yaml.SafeLoader):
  """YAML as OmegaConf reads fairseq configs: also `1e-6` (no dot) is a float, which YAML 1.1 reads as a string."""


_OmegaConfYaml.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
                                     list("-+0123456789"))


def _field_value(field_type: Any, value: Any) -> Any:
  """`value` as OmegaConf stores it for a dataclass field of `field_type`: floats for float fields, enum names."""
  args = [t for t in typing.get_args(field_type) if t is not type(None)] or [field_type]
  target = args[0]
  if value is None:
    return None
  if isinstance(target, type) and issubclass(target, enum.Enum):
    return (target[value] if isinstance(value, str) else value).name
  if target is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


def _dataclass_tree(cls: type, instance: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
  """Every field of `instance` (a `cls`) in field order, `overrides` applied, as a plain nested dict."""
  unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
  if unknown:
    raise ValueError(f"{sorted(unknown)} are not fields of upstream's {cls.__name__}")
  hints = typing.get_type_hints(cls)
  tree = {}
  for field in dataclasses.fields(cls):
    value = getattr(instance, field.name)
    if dataclasses.is_dataclass(value):
      tree[field.name] = _dataclass_tree(type(value), value, overrides.get(field.name) or {})
    else:
      tree[field.name] = _field_value(hints[field.name], overrides.get(field.name, value))
  return tree


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
  out = copy.deepcopy(base)
  for key, value in changes.items():
    out[key] = _merge(out.get(key) or {}, value) if isinstance(value, Mapping) else value
  return out


def _resolve(tree: Any, root: Mapping[str, Any]) -> Any:
  """Replaces OmegaConf interpolations `${a.b}` (the whole value) by the value at that path of `root`."""
  if isinstance(tree, dict):
    return {k: _resolve(v, root) for k, v in tree.items()}
  match = re.fullmatch(r"\$\{([\w.]+)\}", tree) if isinstance(tree, str) else None
  if not match:
    return tree
  value = root
  for part in match.group(1).split("."):
    value = value[part]
  return _resolve(value, root)


def eat_cfg(upstream: Any, upstream_dir: str | pathlib.Path, size: str) -> dict[str, Any]:
  """The fairseq `cfg` of an EAT pre-training checkpoint: "tiny" (the fixture's), "base" or "large"."""
  text = (pathlib.Path(upstream_dir) / EAT_YAML[size]).read_text()
  groups = yaml.load(text, Loader=_OmegaConfYaml)  # noqa: S506  (a SafeLoader)
  groups["common"]["user_dir"] = EAT_USER_DIR
  model_yaml = groups.pop("model")
  if size == "tiny":
    model_yaml = _merge(model_yaml, EAT_TINY)
  model = _dataclass_tree(upstream.Data2VecMultiConfig, upstream.Data2VecMultiConfig(), model_yaml)
  cfg = {**groups, "model": model}
  cfg["model"] = _resolve(model, cfg)
  return cfg


def eat_checkpoint(upstream: Any, cfg: dict[str, Any]) -> dict[str, Any]:
  """`{"args", "cfg", "model"}` of `eat_tiny.pt`: the perturbed pre-training model with its `_ema` teacher."""
  import torch

  torch.manual_seed(EAT_SEED)
  model = upstream_eat.build_model(upstream, cfg["model"], pretraining=True)
  state = model.state_dict()
  student = {k: v for k, v in state.items() if k != "_ema"}
  torch.manual_seed(EAT_SEED + 1)
  with torch.no_grad():  # student, then its teacher with separate noise
    for tensors in (student, state["_ema"]):
      for tensor in tensors.values():
        tensor.add_(NOISE_STD * torch.randn(tensor.shape))
  return {"args": None, "cfg": cfg, "model": model.state_dict()}


def eat_fbank(wav: np.ndarray, kaldi: Any, target_length: int) -> tuple[np.ndarray, np.ndarray]:
  """(normalised fbank [B, target_length, 128], real frames [B]) as upstream's `feature_extract.py` makes them."""
  import torch

  mels, frames = [], []
  for clip in torch.from_numpy(wav):
    mel = kaldi.fbank((clip - clip.mean())[None], htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False,
                      window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    frames.append(mel.shape[0])
    mel = torch.nn.functional.pad(mel, (0, 0, 0, target_length - mel.shape[0]))  # zero frames, then normalise
    mels.append((mel - EAT_NORM_MEAN) / (EAT_NORM_STD * 2))
  return torch.stack(mels).numpy(), np.asarray(frames, np.int32)


def eat_io(upstream: Any, checkpoint: Mapping[str, Any], wav: np.ndarray, kaldi: Any) -> dict[str, np.ndarray]:
  """Upstream's fbank, patch tokens, encoder input, block outputs, FFN outputs and features for `wav`."""
  import torch

  model = upstream_eat.build_model(upstream, checkpoint["cfg"]["model"])
  model.load_state_dict(dict(checkpoint["model"]), strict=True)  # upstream's loader drops `_ema` (no teacher)
  fbank, num_frames = eat_fbank(wav, kaldi, EAT_TARGET_LENGTH)
  encoder = model.modality_encoders["IMAGE"]
  recorder = _Recorder()
  recorder.on(encoder.local_encoder, "patch_tokens")
  recorder.on(encoder.context_encoder, "encoder_input")
  for i, block in enumerate(model.blocks):
    recorder.on(block, f"block{i}")
  try:
    with torch.inference_mode():
      out = model.extract_features(torch.from_numpy(fbank)[:, None], padding_mask=None, mask=False,
                                   remove_extra_tokens=False)
  finally:
    recorder.close()
  got = recorder.outputs
  return {"wav": wav, "fbank": fbank, "num_frames": num_frames, "patch_tokens": got["patch_tokens"],
          "encoder_input": got["encoder_input"],
          "layer_outputs": np.stack([got[f"block{i}"] for i in range(len(model.blocks))]),
          "layer_ffn_outputs": torch.stack(out["layer_results"]).numpy(), "features": out["x"].numpy()}


def hf_name(fairseq_key: str) -> str:
  for old, new in HF_PREFIXES:
    if fairseq_key.startswith(old):
      return new + fairseq_key[len(old):]
  raise KeyError(fairseq_key)


def _encoder_keys(state: Mapping[str, Any]) -> list[str]:
  return [k for k in state if k != "_ema" and not k.startswith(EAT_DECODER_PREFIX)]


def eat_hf(checkpoint: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """(safetensors tensors, config.json fields) of the HuggingFace port holding the student encoder."""
  state, model_cfg = checkpoint["model"], checkpoint["cfg"]["model"]
  image = model_cfg["modalities"]["image"]
  tensors = {hf_name(k): state[k].contiguous() for k in _encoder_keys(state)}
  config = {
      "model_type": "eat", "embed_dim": model_cfg["embed_dim"], "depth": model_cfg["depth"],
      "num_heads": model_cfg["num_heads"], "patch_size": image["patch_size"], "stride": image["patch_size"],
      "in_chans": image["in_chans"], "mel_bins": 128, "max_length": image["max_length"], "num_classes": 527,
      "model_variant": "pretrain", "mlp_ratio": model_cfg["mlp_ratio"], "qkv_bias": True,
      "drop_rate": model_cfg["encoder_dropout"], "attn_drop_rate": model_cfg["attention_dropout"],
      "activation_dropout": model_cfg["activation_dropout"], "post_mlp_drop": model_cfg["post_mlp_drop"],
      "start_drop_path_rate": model_cfg["start_drop_path_rate"], "end_drop_path_rate": model_cfg["end_drop_path_rate"],
      "layer_norm_first": model_cfg["layer_norm_first"], "norm_eps": model_cfg["norm_eps"],
      "norm_affine": model_cfg["norm_affine"], "fixed_positions": image["fixed_positions"],
      "img_size": [image["target_length"], 128],
  }
  return tensors, config


def eat_keys(upstream: Any, upstream_dir: str | pathlib.Path, size: str) -> dict[str, Any]:
  """Layout and parameter counts of upstream's EAT-`size` pre-training checkpoint (`eat_{size}_keys.json`)."""
  cfg = eat_cfg(upstream, upstream_dir, size)
  model = _on_meta(lambda: upstream_eat.build_model(upstream, cfg["model"], pretraining=True))
  state = model.state_dict()
  top = {k: v for k, v in state.items() if k != "_ema"}
  encoder = _encoder_keys(top)
  counts = {
      "encoder_params_incl_positions": sum(top[k].numel() for k in encoder),
      "encoder_params_excl_positions": sum(top[k].numel() for k in encoder if k != EAT_POSITIONS),
      "decoder_params": sum(v.numel() for k, v in top.items() if k.startswith(EAT_DECODER_PREFIX)),
      "ema_teacher_numel": sum(v.numel() for v in state["_ema"].values()),
      "model_top_level_numel": sum(v.numel() for v in top.values()),
  }
  hf = [{**entry, "key": hf_name(entry["key"]), "fairseq_key": entry["key"]}
        for entry in _layout({k: top[k] for k in encoder})]
  return {"description": KEYS_DESCRIPTION["eat"].format(size=size, yaml=EAT_YAML[size]), "cfg_model": cfg["model"],
          "counts": counts, "fairseq_model_keys": _layout(top), "fairseq_model_ema_subkeys": _layout(state["_ema"]),
          "hf_safetensors_keys": hf}


# ---------------------------------------------------------------------------------------------------------
# Files.

def relative_difference(made: np.ndarray, stored: np.ndarray) -> float:
  """max |made - stored| / max |stored| for float arrays (0 where equal); 0 or inf for other arrays, which must be
  equal; inf for another shape or dtype. A regenerated array is accepted up to `REGENERATED_RTOL`."""
  if made.shape != stored.shape or made.dtype != stored.dtype:
    return math.inf
  if not np.issubdtype(stored.dtype, np.floating):
    return 0.0 if np.array_equal(made, stored) else math.inf
  scale = float(np.abs(stored.astype(np.float64)).max(initial=0.0))
  difference = float(np.abs(made.astype(np.float64) - stored).max(initial=0.0))
  return difference / scale if scale else (0.0 if difference == 0 else math.inf)


def _write_json(path: pathlib.Path, obj: Any) -> None:
  path.write_text(json.dumps(obj, indent=1))


def file_entry(path: pathlib.Path) -> dict[str, Any]:
  """Size, sha256 and (for .npz) each array's shape and dtype, as `manifest.json` lists a file."""
  data = path.read_bytes()
  entry = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
  if path.suffix == ".npz":
    with np.load(path) as npz:
      entry["arrays"] = {name: {"shape": list(npz[name].shape), "dtype": str(npz[name].dtype)} for name in npz.files}
  return entry


def manifest(folder: str | pathlib.Path, kaldi_sha256: str = KALDI_SHA256) -> dict[str, Any]:
  """`manifest.json` of the fixtures in `folder`: seeds, configs and every other file's size, sha256, arrays."""
  import torch

  folder = pathlib.Path(folder)
  beats_cfg = torch.load(folder / "beats_tiny.pt", map_location="cpu", weights_only=True)["cfg"]
  eat_ckpt = torch.load(folder / "eat_tiny.pt", map_location="cpu", weights_only=True)
  with np.load(folder / "eat_tiny_io.npz") as npz:
    num_frames = [int(n) for n in npz["num_frames"]]
  files = sorted(p.name for p in folder.iterdir() if p.name not in ("manifest.json", "README.md"))
  return {
      "upstream": {**UPSTREAM, "kaldi_py_sha256": kaldi_sha256,
                   "generator": "benchmarks/make_reference_fixtures.py"},
      "beats": {"cfg": beats_cfg, "init_seed": BEATS_SEED, "noise_seed": BEATS_SEED + 1, "wav_seed": WAV_SEED,
                "perturbation": {"all_tensors_std": NOISE_STD, "extra_std": dict(BEATS_EXTRA_STD)},
                "fbank_mean": BEATS_FBANK_MEAN, "fbank_std": BEATS_FBANK_STD, "wav_scale": BEATS_WAV_SCALE,
                "deep_norm_alpha": (2 * beats_cfg["encoder_layers"]) ** 0.25},
      "eat": {"cfg_model": eat_ckpt["cfg"]["model"], "init_seed": EAT_SEED, "noise_seed": EAT_SEED + 1,
              "wav_seed": WAV_SEED,
              "perturbation": {"all_tensors_std": NOISE_STD, "ema_copies": "separate N(0,0.02) noise"},
              "norm_mean": EAT_NORM_MEAN, "norm_std": EAT_NORM_STD, "target_length": EAT_TARGET_LENGTH,
              "num_frames": num_frames, "hf_keys": [hf_name(k) for k in _encoder_keys(eat_ckpt["model"])]},
      "files": {name: file_entry(folder / name) for name in files},
  }


def write_manifest(folder: str | pathlib.Path, kaldi_sha256: str = KALDI_SHA256) -> None:
  """(Re)writes `folder/manifest.json` from the files there (atomically)."""
  atomic.write_text(str(pathlib.Path(folder) / "manifest.json"), json.dumps(manifest(folder, kaldi_sha256), indent=1))


def make(upstream_beats_dir: str, upstream_eat_dir: str, torchaudio: str, out: str | pathlib.Path,
         wav: np.ndarray) -> list[str]:
  """Writes every fixture into `out` (each file moved in complete); returns the names written."""
  import safetensors.torch
  import torch

  if wav.dtype != np.float32 or wav.ndim != 2:
    raise ValueError(f"the clips must be float32 [batch, samples], found {wav.dtype} {list(wav.shape)}")
  kaldi = upstream_beats.load_kaldi(torchaudio)
  if kaldi.sha256 != KALDI_SHA256:
    print(f"warning: {kaldi.__file__} is not torchaudio 2.11.0's kaldi.py (sha256 {kaldi.sha256}); the fbank "
          "arrays may differ from the committed ones")
  out = pathlib.Path(out).resolve()
  out.mkdir(parents=True, exist_ok=True)
  for stale in out.glob(".staging-*"):  # left by a killed run of this generator
    shutil.rmtree(stale, ignore_errors=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
  try:
    beats = upstream_beats.import_upstream_beats(upstream_beats_dir)
    upstream_beats.use_kaldi(beats, kaldi)
    beats_ckpt, beats_model = beats_checkpoint(beats)
    torch.save(beats_ckpt, staging / "beats_tiny.pt")  # the zip's inner folder is named after the file
    np.savez(staging / "beats_tiny_io.npz", **beats_io(beats_model, wav))
    _write_json(staging / "beats_full_keys.json", beats_full_keys(beats))

    eat = upstream_eat.import_upstream_eat(upstream_eat_dir)
    eat_ckpt = eat_checkpoint(eat, eat_cfg(eat, upstream_eat_dir, "tiny"))
    torch.save(eat_ckpt, staging / "eat_tiny.pt")
    np.savez(staging / "eat_tiny_io.npz", **eat_io(eat, eat_ckpt, wav, kaldi))
    tensors, hf_config = eat_hf(eat_ckpt)
    safetensors.torch.save_file(tensors, str(staging / "eat_tiny.safetensors"), metadata={"format": "pt"})
    _write_json(staging / "eat_tiny_hf_config.json", hf_config)
    for size in ("base", "large"):
      _write_json(staging / f"eat_{size}_keys.json", eat_keys(eat, upstream_eat_dir, size))
    np.savez_compressed(staging / make_pretraining_fixture.FILE,
                        **make_pretraining_fixture.make(upstream_eat_dir, staging))
    write_manifest(staging, kaldi.sha256)
    names = sorted(p.name for p in staging.iterdir())
    for name in names:
      os.replace(staging / name, out / name)
    return names
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def read_wav(path: str | pathlib.Path) -> np.ndarray:
  """The clips (`wav`) of an existing `beats_tiny_io.npz` or `eat_tiny_io.npz`."""
  with np.load(path) as npz:
    if "wav" not in npz.files:
      raise KeyError(f"{path}: no `wav` array (expected a beats_tiny_io.npz or eat_tiny_io.npz)")
    return npz["wav"]


def main(argv):
  del argv
  f = flags.FLAGS
  if f.manifest_only:
    write_manifest(f.out)
    print(f"wrote {pathlib.Path(f.out) / 'manifest.json'}")
    return
  if not (f.upstream_beats and f.upstream_eat and f.torchaudio):
    raise app.UsageError("give --upstream_beats, --upstream_eat and --torchaudio (or --manifest_only)")
  wav = read_wav(f.wav_from)
  names = make(f.upstream_beats, f.upstream_eat, f.torchaudio, f.out, wav)
  print(f"wrote {len(names)} files to {f.out}: {', '.join(names)}")


if __name__ == "__main__":
  flags.DEFINE_string("upstream_beats", None, "The beats/ folder of a clone of github.com/microsoft/unilm.")
  flags.DEFINE_string("upstream_eat", None, "A clone of github.com/cwx-worst-one/EAT.")
  flags.DEFINE_string("torchaudio", None, "A torchaudio 2.11.0 wheel (.whl), an unpacked wheel or site-packages "
                      "folder, or its torchaudio/compliance/kaldi.py.")
  flags.DEFINE_string("out", str(DEFAULT_OUT), "Folder to write the fixtures to.")
  flags.DEFINE_string("wav_from", str(DEFAULT_OUT / "beats_tiny_io.npz"), "An .npz whose `wav` holds the clips.")
  flags.DEFINE_bool("manifest_only", False, "Only rewrite manifest.json from the files in --out (no clones needed).")
  app.run(main)
