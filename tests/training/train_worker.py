"""A training process to be killed by test_train_resume.py (not a test module itself).

  python train_worker.py DATASET WORKDIR

Registers the tiny attention encoder of conftest.py under the name the tests use and runs `fine_tune.train` with
the tests' config (`test_train_resume._config`) and a checkpoint every step. Each metrics row is followed by
a pause of `ROW_PAUSE_S`, so the killing test can time its SIGKILL around a step and its (asynchronous)
checkpoint; the pause is outside the step and changes no number.
"""

import importlib.util
import os
import pathlib
import sys
import time

ROW_PAUSE_S = 0.4


def main(dataset: str, workdir: str) -> None:
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  os.environ["JAX_PLATFORMS"] = "cpu"
  here = pathlib.Path(__file__).resolve().parent
  sys.path.insert(0, str(here.parents[1]))
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.FLAGS.mark_as_parsed()
  from asd_jax.finetuning import fine_tune  # pylint: disable=g-import-not-at-top
  from asd_jax.models import networks  # pylint: disable=g-import-not-at-top
  from asd_jax.training import train_log  # pylint: disable=g-import-not-at-top

  def load(name):
    spec = importlib.util.spec_from_file_location(name, here / f"{name.split('_', 1)[1]}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

  fixtures = load("training_conftest")
  tests = load("training_test_train_resume")
  networks.ENCODERS[fixtures.TINY] = fixtures.tiny_entry(fixtures.TinyEncoder, fixtures.tiny_frontend)
  networks.NETWORKS[fixtures.TINY] = networks.classifier_network
  write = train_log.MetricWriter.write

  def write_and_pause(self, step, row):
    write(self, step, row)
    time.sleep(ROW_PAUSE_S)

  train_log.MetricWriter.write = write_and_pause
  config = tests._config(dataset)  # pylint: disable=protected-access
  config.train.checkpoint_every = 1
  fine_tune.train(config, workdir, progress=False)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
