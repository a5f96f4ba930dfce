"""The command-line programs answer bad input with `error: <message>` naming the file or field, exit status 1
and no traceback: a missing checkpoint, a checkpoint of the other model, a misspelt config field, a missing
dataset. Each case runs the real program (`python -m ...`) in a subprocess, as a user would.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _damaged_converted(fx, tmp):
  """A converted BEATs folder with one data chunk deleted (was a TensorStore error and tracebacks)."""
  from weights_conversion import convert_beats  # pylint: disable=g-import-not-at-top
  folder = tmp / "beats"
  convert_beats.convert(str(fx / "beats_tiny.pt"), str(folder))
  max((p for p in (folder / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size).unlink()
  return folder


def _damaged_dataset(tmp):
  """A tiny dataset with a 1-sample clip, an unreadable wav and a machine folder without training clips."""
  from asd_jax.data import synth  # pylint: disable=g-import-not-at-top
  root = tmp / "data"
  synth.generate(root, scale=0.01, seed=0, machines=["ToyCar", "fan"], duration=1.0)
  train = sorted((root / "ToyCar" / "train").glob("*.wav"))
  soundfile.write(str(train[0]), np.zeros(1, np.float32), 16000)
  train[1].write_bytes(b"RIFF....WAVEfmt garbage")
  for wav in (root / "fan" / "train").glob("*.wav"):
    wav.unlink()
  return root


def _toycar_clips(tmp):
  return sorted((tmp / "data" / "ToyCar" / "train").glob("*.wav"))


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=120)


CASES = {
    "missing checkpoint": (
        lambda fx, tmp: ("weights_conversion.convert_eat", f"--checkpoint={tmp / 'absent' / 'eat.pt'}",
                         f"--output={tmp / 'out'}"),
        lambda fx, tmp: [f"checkpoint {tmp / 'absent' / 'eat.pt'} does not exist"]),
    "EAT checkpoint given to convert_beats": (
        lambda fx, tmp: ("weights_conversion.convert_beats", f"--checkpoint={fx / 'eat_tiny.pt'}",
                         f"--output={tmp / 'out'}"),
        lambda fx, tmp: [f"checkpoint {fx / 'eat_tiny.pt'} does not match the model", "cfg lacks", "encoder_layers",
                         "not a BEATs checkpoint"]),
    "BEATs checkpoint as the EAT of a config": (
        lambda fx, tmp: ("asd_jax.train", "--config=configs/demo.py", "--config.model.network=eat",
                         f"--config.model.init_checkpoint={fx / 'beats_tiny.pt'}", f"--workdir={tmp / 'work'}",
                         "--dry_run"),
        lambda fx, tmp: [f"checkpoint {fx / 'beats_tiny.pt'} does not match the model", "modalities.image"]),
    "a config field by its old name": (
        lambda fx, tmp: ("asd_jax.train", "--config=configs/demo.py", "--config.model.encoder=eat",
                         f"--workdir={tmp / 'work'}"),
        lambda fx, tmp: ["--config.model.encoder=eat: config.model.encoder is now config.model.network"]),
    "misspelt config field": (
        lambda fx, tmp: ("asd_jax.train", "--config=configs/demo.py", "--config.train.epoch=2",
                         f"--workdir={tmp / 'work'}"),
        lambda fx, tmp: ["--config.train.epoch=2", "no field 'epoch'", 'Did you mean "epochs"']),
    "nonsense config values": (  # each would be a silent no-op or a JAX traceback; all named in one line
        lambda fx, tmp: ("asd_jax.train", "--config=configs/demo.py", "--config.train.epochs=0",
                         "--config.optim.learning_rate=-1e-4", "--config.data.clip_seconds=0",
                         f"--workdir={tmp / 'work'}"),
        lambda fx, tmp: ["config.data.clip_seconds=0.0 must be a number > 0",
                         "config.optim.learning_rate=-0.0001 must be a number > 0",
                         "config.train.epochs=0 must be a positive integer"]),
    "synth with bad arguments": (
        lambda fx, tmp: ("asd_jax.data.synth", f"--out={tmp / 'out'}", "--machines=fan,lathe"),
        lambda fx, tmp: ["unknown machine type(s) ['lathe']"]),
    "damaged converted checkpoint": (
        lambda fx, tmp: ("asd_jax.train", "--config=configs/demo.py", "--dry_run", f"--workdir={tmp / 'work'}",
                         f"--config.model.init_checkpoint={_damaged_converted(fx, tmp)}"),
        lambda fx, tmp: [f"checkpoint {tmp / 'beats'}: damaged: params/", "is missing; convert it again"]),
    "every dataset problem at once, before any compute": (
        lambda fx, tmp: ("asd_jax.train", "--config=configs/demo.py", "--config.data.clip_seconds=1.0",
                         f"--config.data.root={_damaged_dataset(tmp)}", f"--workdir={tmp / 'work'}"),
        lambda fx, tmp: [f"3 problem(s) in dataset {tmp / 'data'}",
                         f"{_toycar_clips(tmp)[0]}: 6.25e-05 s long, less than 0.1 of the 1 s clip length",
                         f"{_toycar_clips(tmp)[1]}: cannot read as audio",
                         f"{tmp / 'data' / 'fan'}: no training clips"]),
    "embed: nonsense config value": (
        lambda fx, tmp: ("asd_jax.embed", "--config=configs/demo.py", "--config.embed.batch_size=0",
                         f"--config.data.root={tmp / 'absent'}", f"--workdir={tmp / 'work'}"),
        lambda fx, tmp: ["config.embed.batch_size=0 must be a positive integer"]),
    "embed: config typo": (
        lambda fx, tmp: ("asd_jax.embed", "--config=configs/demo.py", "--config.embed.batchsize=2",
                         f"--workdir={tmp / 'work'}"),
        lambda fx, tmp: ["--config.embed.batchsize=2", "no field 'batchsize'", 'Did you mean "batch_size"']),
    "missing dataset": (
        lambda fx, tmp: ("asd_jax.embed", "--config=configs/demo.py", f"--config.data.root={tmp / 'absent'}",
                         f"--workdir={tmp / 'work'}"),
        lambda fx, tmp: [f"dataset {tmp / 'absent'}", "not a directory"]),
}


# The same mechanism as the train case above (`cli.run`), wired for embed: not worth a default-suite subprocess.
SLOW_CASES = {"embed: config typo"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in CASES])
def test_bad_input_is_one_error_line_without_traceback(case, fixtures, tmp_path):
  command, expected = CASES[case]
  result = _run(*command(fixtures, tmp_path))
  assert result.returncode == 1, result.stderr[-2000:]
  assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr, result.stderr[-2000:]
  assert "\nerror: " in "\n" + result.stderr, result.stderr[-2000:]
  error = result.stderr[result.stderr.index("error: "):]
  for text in expected(fixtures, tmp_path):
    assert text in error, (text, error)
  assert not (tmp_path / "out").exists() and not (tmp_path / "work" / "checkpoints").exists()


@pytest.mark.parametrize("argv,message", [
    (["--config.model.encoder=eat"], "--config.model.encoder=eat: config.model.encoder is now config.model.network"),
    (["--config.models.leat.train.train.epochs=2"], "--config.models.leat.train.train.epochs=2: "
     "config.models.leat.train.train.epochs is now config.models.leat.fine_tune.train.epochs"),
    (["--config.models.feat_random.fine_tune.model.encoder=beats"], "--config.models.feat_random.fine_tune.model."
     "encoder=beats: config.models.feat_random.fine_tune.model.encoder is now "
     "config.models.feat_random.fine_tune.model.network"),
    (["--system=DIR"], "--system=DIR: --system is now --detector"),
    (["--system", "DIR"], "--system: --system is now --detector"),
])
def test_an_old_name_is_one_error_saying_the_new_one(argv, message):
  from asd_jax import cli  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit) as exit_:
    cli.parse_flags(["program", "--config.train.epochs=2", *argv], {"system": "detector"})
  assert str(exit_.value) == f"error: {message}"


def test_new_names_pass_the_old_name_check():
  from asd_jax import cli  # pylint: disable=import-outside-toplevel
  new = ["p", "--config.models.leat.fine_tune.train.epochs=2", "--config.model.network=eat", "--detector=DIR",
         "--config.train.epochs=1"]
  assert not cli._renamed(new, {"system": "detector"})  # pylint: disable=protected-access


# The program's main with its one library call replaced by a real Orbax checkpoint save (Orbax logs ~20 INFO lines
# per save; a real `train` printed ~70 of them among its bar), so the test costs an import, not a compilation.
_QUIET_PROGRAM = """
import sys
import jax.numpy as jnp
from asd_jax import cli
from asd_jax.checkpoints import train_state
from asd_jax.embedding import embed
from asd_jax.finetuning import fine_tune
from asd_jax import {program} as program

def save_a_checkpoint(config, workdir, **kwargs):
  ckpt = train_state.Checkpointer(workdir + "/checkpoints")
  ckpt.save(1, {{"w": jnp.ones(3)}}, {{}}, {{}})
  ckpt.wait()
  ckpt.close()
  return workdir

fine_tune.train = embed.embed = save_a_checkpoint
program.define_flags()
cli.run(program.main)
"""


@pytest.mark.parametrize("program", ["train", "embed"])
def test_train_and_embed_log_warnings_only_unless_verbosity_is_given(program, tmp_path):
  """Issue 23.8: `train` and `embed` printed ~70 INFO lines (Orbax, optax); quiet by default, as the pipeline."""
  args = ["--config=configs/demo.py", f"--workdir={tmp_path}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  command = [sys.executable, "-c", _QUIET_PROGRAM.format(program=program), *args]
  quiet = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert quiet.returncode == 0, quiet.stderr[-2000:]
  assert (tmp_path / "checkpoints" / "1").is_dir()  # the save (and its logging) really happened
  assert [line for line in quiet.stderr.splitlines() if line.startswith("I")] == []
  if program == "embed":
    return  # the same Orbax logging: asked for once
  verbose = subprocess.run(command + ["--verbosity=0"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
  assert verbose.returncode == 0 and "orbax" in verbose.stderr.lower()  # asked for: Orbax's INFO lines are there
