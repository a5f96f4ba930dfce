"""Benchmarks: every module imports and has the runner's interface; the runner's section rewriting; the
shared helpers; one quick benchmark end to end. Heavy benchmarks are not run here (see `make bench`)."""

import dataclasses
import importlib
import inspect
import math
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common
from benchmarks import device_check
from benchmarks import run as runner
from benchmarks import side_by_side
from benchmarks import upstream_beats
from benchmarks import upstream_eat

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_bench_module_has_run_with_quick():
  names = runner.available()
  assert {"beats", "eat", "embed", "fbank", "knn", "train"} <= set(names)
  for name in names:
    module = importlib.import_module(f"benchmarks.bench_{name}")
    parameters = inspect.signature(module.run).parameters
    assert list(parameters) == ["quick"] and parameters["quick"].default is False, name


def test_replace_section_appends_replaces_and_keeps_the_rest():
  doc = "# Benchmarks\n\nHand-written notes.\n"
  doc = runner.replace_section(doc, "a", "## A\n| x |\n")
  doc = runner.replace_section(doc, "b", "## B v1")
  assert doc.index("Hand-written notes.") < doc.index("<!-- bench:a -->") < doc.index("<!-- bench:b -->")
  doc = runner.replace_section(doc + "\nTrailing text.\n", "a", "## A v2")
  assert "## A v2" in doc and "| x |" not in doc and doc.count("<!-- bench:a -->") == 1
  assert "## B v1" in doc and doc.rstrip().endswith("Trailing text.")
  # A section whose text looks like a regex replacement template is kept literally.
  assert r"\1 and \g<0>" in runner.replace_section(doc, "b", r"## B \1 and \g<0>")


@pytest.mark.slow  # ~12 s: runs a benchmark; the runner is infrastructure of `make bench`, not of the library
def test_runner_runs_a_quick_benchmark_and_rewrites_only_its_section(tmp_path):
  """`python -m benchmarks.run --only=fbank --quick` end to end (a few seconds)."""
  output = tmp_path / "BENCHMARKS.md"
  output.write_text("# Benchmarks\n\nNotes.\n\n<!-- bench:fbank -->\nold\n<!-- /bench:fbank -->\n\n"
                    "<!-- bench:knn -->\nkept\n<!-- /bench:knn -->\n")
  result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--only=fbank", "--quick", f"--output={output}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  text = output.read_text()
  assert "old" not in text and "Notes." in text and "kept" in text
  section = text[text.index("<!-- bench:fbank -->"):text.index("<!-- /bench:fbank -->")]
  lines = section.splitlines()
  assert lines[1].startswith("## ") and common.machine_description().split(";")[0] in section
  assert sum(line.startswith(("| JAX", "| librosa")) for line in lines) == 3


def test_helpers():
  table = common.markdown_table(["a", "b"], [[1.23456, "x"], [2, 0.5]])
  assert table.splitlines() == ["| a | b |", "|---|---|", "| 1.23 | x |", "| 2 | 0.5 |"]
  assert "cores" in common.machine_description() and "jax" in common.machine_description()
  calls = []
  median, spread = common.time_call(lambda: calls.append(1), repeats=3, warmup=2)
  assert len(calls) == 5 and median >= 0 and spread >= 0
  compiled, compile_s, median, _ = common.compile_and_time(lambda x: x * 2, jnp.arange(4.0), repeats=2)
  np.testing.assert_array_equal(compiled(jnp.arange(4.0)), [0, 2, 4, 6])
  assert compile_s > 0 and median > 0 and common.xla_memory_bytes(compiled) >= 32


def test_side_by_side_needs_a_real_upstream_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="expected upstream's BEATs.py"):
    upstream_beats.import_upstream_beats(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Upstream EAT without fairseq: the stand-ins (no upstream code needed here).

def test_upstream_eat_needs_the_upstream_model_files(tmp_path):
  (tmp_path / "models").mkdir()
  (tmp_path / "models" / "base.py").write_text("")
  with pytest.raises(FileNotFoundError, match=r"models/EAT_pretraining.py, models/images.py, .*cwx-worst-one/EAT"):
    upstream_eat.import_upstream_eat(tmp_path)


def test_stand_ins_are_registered_only_for_missing_packages():
  modules = {"omegaconf": "the real one"}
  added = upstream_eat.install_stand_ins(modules, is_installed=lambda name: name == "timm")
  assert added == ["fairseq", "omegaconf"]
  assert not any(name.startswith("timm") for name in modules)  # installed: left alone
  assert modules["omegaconf"] == "the real one"  # an existing entry is never replaced
  assert {"fairseq", "fairseq.modules", "fairseq.models", "fairseq.dataclass", "fairseq.utils",
          "fairseq.data.data_utils", "fairseq.tasks", "fairseq.modules.transformer_sentence_encoder",
          "fairseq.models.wav2vec.wav2vec2"} <= set(modules)
  assert upstream_eat.stand_ins_in_use(modules) == ["fairseq"]
  assert upstream_eat.install_stand_ins({}, is_installed=lambda name: True) == []
  assert upstream_eat.missing_packages(lambda name: name != "fairseq") == ["fairseq"]


def test_timm_mlp_stand_in_is_fc1_erf_gelu_fc2():
  import torch

  mlp = upstream_eat.stand_in_modules("timm")["timm.models.vision_transformer"].Mlp(
      in_features=6, hidden_features=10, act_layer=torch.nn.GELU, drop=0.3).eval()
  assert [name for name, _ in mlp.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
  assert [name for name, _ in mlp.named_children()] == ["fc1", "act", "drop1", "norm", "fc2", "drop2"]  # timm's
  x = np.random.default_rng(0).standard_normal((2, 5, 6)).astype(np.float32)
  p = {name: t.detach().numpy().astype(np.float64) for name, t in mlp.named_parameters()}
  h = x @ p["fc1.weight"].T + p["fc1.bias"]
  h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
  with torch.no_grad():
    np.testing.assert_allclose(mlp(torch.from_numpy(x)).numpy(), h @ p["fc2.weight"].T + p["fc2.bias"], atol=1e-6)


def test_construction_stand_ins_are_exact_and_unused_ones_refuse():
  import torch

  timm = upstream_eat.stand_in_modules("timm")
  assert timm["timm.models.layers"].to_2tuple(16) == (16, 16)
  assert timm["timm.models.layers"].to_2tuple([1024, 128]) == (1024, 128)
  omegaconf = upstream_eat.stand_in_modules("omegaconf")["omegaconf"]
  assert omegaconf.II("model.depth") == "${model.depth}" and omegaconf.MISSING == "???"
  fairseq = upstream_eat.stand_in_modules("fairseq")
  linear = torch.nn.Linear(400, 300)
  fairseq["fairseq.modules.transformer_sentence_encoder"].init_bert_params(linear)
  assert abs(float(linear.weight.detach().std()) - 0.02) < 1e-3 and not linear.bias.detach().any()
  base = fairseq["fairseq.dataclass"].FairseqDataclass
  config = dataclasses.make_dataclass("Config", [("depth", int, 12)], bases=(base,))
  assert config()._name is None and config(depth=2).depth == 2
  register = fairseq["fairseq.models"].register_model("data2vec_multi", dataclass=config)
  assert register(config) is config
  with pytest.raises(NotImplementedError, match="compute_block_mask_2d"):
    fairseq["fairseq.data.data_utils"].compute_mask_indices((2, 10), None, 0.8, 5)
  with pytest.raises(NotImplementedError, match="never reach"):
    timm["timm.models.vision_transformer"].DropPath(0.1)


def test_pretraining_stand_ins_are_exact():
  """The fairseq pieces pre-training runs, against direct PyTorch computations."""
  import torch

  modules = upstream_eat.stand_in_modules("fairseq")["fairseq.modules"]
  x = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(2, 3, 5, 4)
  assert torch.equal(modules.SamePad2d(3)(x), x)
  assert torch.equal(modules.SamePad2d(4)(x), x[:, :, :4, :3])
  assert torch.equal(modules.SamePad(4)(x[..., 0]), x[:, :, :4, 0])
  assert torch.equal(modules.SamePad(3, causal=True)(x[..., 0]), x[:, :, :3, 0])
  assert torch.equal(modules.TransposeLast(tranpose_dim=-3)(x), x.transpose(-3, -1))
  norm = modules.LayerNorm(4, elementwise_affine=False)
  assert isinstance(norm, torch.nn.LayerNorm) and norm.eps == 1e-5 and not list(norm.parameters())
  leaf = torch.ones(3, requires_grad=True)
  modules.GradMultiply.apply(leaf * 2, 0.25).sum().backward()
  assert torch.equal(leaf.grad, torch.full((3,), 0.5))
  put = upstream_eat.stand_in_modules("fairseq")["fairseq.utils"].index_put(
      torch.zeros(2, 3), torch.tensor([[True, False, True], [False, False, True]]), torch.tensor([1.0, 2.0, 3.0]))
  assert torch.equal(put, torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))

  # EMA: trained tensors the teacher has move by (1 - decay), untrained ones are copied, others skipped.
  teacher = torch.nn.Linear(2, 2)
  student = torch.nn.Sequential()
  student.add_module("weight_holder", torch.nn.Linear(2, 2))
  teacher_sd = {"weight_holder.weight": torch.full((2, 2), 1.0), "weight_holder.bias": torch.full((2,), 4.0)}
  holder = torch.nn.Sequential()
  holder.add_module("weight_holder", teacher)
  config = modules.EMAModuleConfig(ema_decay=0.75, ema_fp32=True, add_missing_params=False)
  ema = modules.EMAModule(holder, config, copy_model=False)
  ema.restore(teacher_sd, build_fp32_params=True)
  with torch.no_grad():
    student.weight_holder.weight.fill_(3.0)
    student.weight_holder.bias.fill_(8.0)
  student.weight_holder.bias.requires_grad_(False)
  student.add_module("decoder", torch.nn.Linear(2, 1))  # the teacher has no decoder: skipped
  ema.step(student)
  assert torch.equal(ema.fp32_params["weight_holder.weight"], torch.full((2, 2), 0.75 * 1.0 + 0.25 * 3.0))
  assert torch.equal(ema.fp32_params["weight_holder.bias"], torch.full((2,), 8.0))
  assert torch.equal(teacher.weight.detach(), torch.full((2, 2), 1.5)) and "decoder.weight" not in ema.fp32_params
  assert ema.get_decay() == 0.75 and ema.logs == {}


def test_upstream_config_classes_import_on_python_3_11():
  source = ("from dataclasses import dataclass\n"
            "@dataclass\nclass Decoder:\n  dim: int = 384\n"
            "@dataclass\nclass Modality:\n  decoder: Decoder = Decoder()\n")
  original = dataclasses.dataclass
  with upstream_eat.dataclass_instances_allowed_as_defaults("upstream_eat_models."):
    namespace = {"__name__": "upstream_eat_models.base"}
    exec(source, namespace)
    assert namespace["Modality"]().decoder.dim == 384
    if sys.version_info >= (3, 11):  # other modules keep the stricter rule
      with pytest.raises(ValueError, match="mutable default"):
        exec(source, {"__name__": "somewhere_else"})
  assert dataclasses.dataclass is original


def test_eat_side_by_side_config_and_frames():
  from asd_jax.models import eat

  for config in (eat.EAT_BASE, eat.EAT_LARGE, dataclasses.replace(eat.EAT_BASE, depth=2)):
    model_cfg = upstream_eat.pretraining_model_cfg(config)
    assert eat.EATConfig.from_fairseq_cfg(model_cfg) == config
  assert upstream_eat.pretraining_model_cfg(eat.EAT_LARGE)["modalities"]["image"]["decoder"]["decoder_kernel"] == 5
  assert side_by_side.eat_fbank_frames(10) == 1024  # upstream's target_length for 10 s clips
  for seconds in (1, 2, 4, 7.5):
    frames = side_by_side.eat_fbank_frames(seconds)
    assert frames % 16 == 0 and frames >= 100 * seconds - 2  # 25 ms windows, 10 ms hop


@pytest.mark.slow
def test_upstream_eat_with_stand_ins_reproduces_the_fixture(upstream_eat_dir, fixtures):
  """Upstream built here (stand-ins for what is missing) gives the features the fixture recorded with fairseq."""
  import torch

  upstream = upstream_eat.import_upstream_eat(upstream_eat_dir)
  checkpoint = torch.load(fixtures / "eat_tiny.pt", map_location="cpu", weights_only=True)
  model = upstream_eat.build_model(upstream, checkpoint["cfg"]["model"])
  model.load_state_dict(dict(checkpoint["model"]), strict=True)  # `_ema` is dropped by upstream's own loader
  io = np.load(fixtures / "eat_tiny_io.npz")
  with torch.inference_mode():
    out = model.extract_features(torch.from_numpy(io["fbank"])[:, None], padding_mask=None, mask=False,
                                 remove_extra_tokens=False)
  np.testing.assert_allclose(out["x"].numpy(), io["features"], atol=1e-5)
  np.testing.assert_allclose(torch.stack(out["layer_results"]).numpy(), io["layer_ffn_outputs"], atol=1e-5)


@pytest.mark.slow
def test_eat_side_by_side_quick_run_agrees(upstream_eat_dir):
  rows, worst, worst_cls = side_by_side.compare_eat(upstream_eat_dir, size="base", batches=[1, 2], repeats=1,
                                                    seconds=2.0, layers=2)
  assert worst < 1e-5 and worst_cls <= worst
  assert [row[0] for row in rows].count(side_by_side.TORCH) == 2 and len(rows) == 7
  assert all(row[4] > 0 for row in rows)


def test_device_check_peak_table_and_section():
  assert device_check.peak_flops("NVIDIA H100 80GB HBM3") == device_check.peak_flops("NVIDIA H200") == 989e12
  assert device_check.peak_flops("cpu") is None

  class Compiled:
    def cost_analysis(self):
      return {"flops": 2e12}

    def memory_analysis(self):
      return None

  check = device_check.Check(budget_s=100.0, output="", json_path="", smoke=True)
  check.peak, check.repeats = 1e15, 3
  check.add("thing", batch=10, compiled=Compiled(), median=0.5, spread=0.1, compile_s=2.0)
  row = check.rows[0]
  assert row["clips_per_s"] == 20 and row["tflops"] == pytest.approx(4.0) and row["mfu"] == pytest.approx(0.004)
  assert "| thing | 10 | 20.0 | 500.0 | 100.0 | 2.0 | 4.0 | 0.4% |" in check.section()
  def broken(check, size):
    raise RuntimeError(f"RESOURCE_EXHAUSTED: {size} bytes\nmore detail")

  check.guarded("big thing", broken, 123)
  assert check.failures == ["big thing: failed with RuntimeError: RESOURCE_EXHAUSTED: 123 bytes"]
  assert "- big thing: failed with RuntimeError" in check.section()
  check.budget_s = 0.0
  assert not check.has_time("late thing") and "late thing" in check.section()


@pytest.mark.slow
def test_device_check_cpu_smoke_runs(tmp_path):
  result = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh"), "--cpu_smoke",
                           f"--json={tmp_path / 'check.json'}", "--output="], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
  assert result.returncode == 0, result.stderr[-2000:]
  import json
  result = json.loads((tmp_path / "check.json").read_text())
  assert result["failures"] == [] and result["skipped"] == []
  assert len(result["rows"]) == 8 and all(r["clips_per_s"] > 0 for r in result["rows"])
  assert [r["what"].split(" (")[0] for r in result["rows"][-2:]] == ["EAT-base pre-training step",
                                                                     "EAT-large pre-training step"]
