"""Subprocess of tests/test_kill.py: a write that a later run reads, killed with SIGKILL at a chosen moment.

  python tests/kill_worker.py export ROOT   exports the log-mel detector to ROOT/detector once, then again, and
                                            kills itself between moving the old folder aside and the new one in
  python tests/kill_worker.py embed ROOT    embeds ROOT/data with the frozen log-mel model into ROOT/model and
                                            kills itself halfway through writing embeddings.npz
"""

import os
import signal
import sys

import numpy as np

from asd_jax import atomic
from asd_jax.data import layout
from asd_jax.detector import export as export_lib
from asd_jax.embedding import extract
from asd_jax.models import networks
from asd_jax.pipeline import cache
from asd_jax.pipeline import specs as specs_lib
from asd_jax.scoring import fusion
from asd_jax.scoring import scorer as scorer_lib
from configs import pipeline_base

CLIP_S = 0.5


def log_mel_spec(root: str) -> specs_lib.ModelSpec:
  """The pipeline's frozen log-mel reference model on the dataset at `root`, 0.5 s clips."""
  config = pipeline_base.get_config("system1")
  config.data.root = root
  config.model_keys = "log_mel"
  config.models.log_mel.frozen.data.clip_seconds = CLIP_S
  config.models.log_mel.frozen.embed.batch_size = 4
  return specs_lib.model_specs(config)[0]


def export_detector(root: str) -> str:
  spec = log_mel_spec(os.path.join(root, "data"))
  network = networks.build_network(spec.config, 1)
  train = [r for r in layout.scan_dataset(os.path.join(root, "data")) if r.split == "train"]
  embeddings, _ = extract.embed_records(spec.config, network, {}, train, all_layers=False, progress=False)
  scorer = scorer_lib.fit(embeddings["embedding"], train, {"smote": False})
  weights = {"log_mel": 1.0}
  model = export_lib.ExportedModel(key="log_mel", name="log-mel", layers="last", sources=(), all_layers=False,
                                     config=spec.config, network=network, params={}, num_classes=1, scorer=scorer)
  return export_lib.export(os.path.join(root, "detector"), system="log-mel", weights=weights, models=[model],
                             thresholds=fusion.fit_thresholds(weights, {"log_mel": scorer}),
                             root=os.path.join(root, "data"), threshold_method="gamma", threshold_quantile=0.9)


def main(mode: str, root: str) -> None:
  if mode == "export":
    target = export_detector(root)
    real_move = atomic._move  # pylint: disable=protected-access

    def move(src, dst):
      if os.path.abspath(dst) == target:  # the new folder onto the detector's path: the old one is aside now
        os.kill(os.getpid(), signal.SIGKILL)
      real_move(src, dst)

    atomic._move = move  # pylint: disable=protected-access
    export_detector(root)
  elif mode == "embed":
    real_savez = np.savez

    def savez(file, **arrays):
      file.write(b"PK\x03\x04 half of an npz")  # some bytes of the archive, then the kill
      file.flush()
      os.kill(os.getpid(), signal.SIGKILL)
      real_savez(file, **arrays)

    np.savez = savez
    cache.ensure_embedded(log_mel_spec(os.path.join(root, "data")), os.path.join(root, "model"), "clips",
                          progress=False)
  raise SystemExit(f"{mode}: not killed")


if __name__ == "__main__":
  main(*sys.argv[1:])
