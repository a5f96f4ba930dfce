"""One process of the two-process embedding test in test_embed.py (not a test module itself).

  python multihost_embed_worker.py PROCESS_ID PORT OUT_DIR

Joins a 2-process JAX job on this machine (2 CPU devices each, gloo collectives), embeds its own shard
`[process_id::2]` of 9 random clips with the tiny classifier of conftest.py in local batches of 2 (global 4),
as the ordered pipeline would hand them over, and saves what `extract.embed_batches` returned to
`OUT_DIR/process_<id>.npz`. The shards are 5 and 4 clips, so process 1 runs out one step early.
"""

import functools
import importlib.util
import os
import pathlib
import sys

NUM_CLIPS = 9
SAMPLES = 1024
GLOBAL_BATCH = 4


def main(process_id: int, port: str, out_dir: str) -> None:
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  os.environ["JAX_PLATFORMS"] = "cpu"
  here = pathlib.Path(__file__).resolve().parent
  sys.path.insert(0, str(here.parents[1]))
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id)
  from asd_jax.embedding import extract  # pylint: disable=g-import-not-at-top
  from asd_jax.models import classifier  # pylint: disable=g-import-not-at-top
  from asd_jax.models import networks  # pylint: disable=g-import-not-at-top
  from asd_jax.runtime import sharding as shd  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location("training_conftest", here / "conftest.py")
  fixtures = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(fixtures)
  model = classifier.Classifier(encoder=fixtures.TinyEncoder(), num_classes=3, frontend=fixtures.tiny_frontend)
  wav = np.random.default_rng(0).normal(size=(NUM_CLIPS, SAMPLES)).astype(np.float32)
  params = model.init(jax.random.key(1), wav[:1])["params"]
  mesh = shd.data_mesh()
  assert mesh.devices.size == 4 and jax.process_count() == 2
  shard = np.arange(NUM_CLIPS)[process_id::2]
  local = GLOBAL_BATCH // 2
  batches = [{"wav": wav[shard[i:i + local]], "index": shard[i:i + local]} for i in range(0, len(shard), local)]
  # One clip at a time per device, as `python -m asd_jax.embed` runs on CPU (shard_map across the processes).
  outputs = functools.partial(networks.classifier_outputs, model)
  forward = extract.make_forward(outputs, mesh, all_layers=True, microbatch=1)
  out = extract.embed_batches(forward, shd.replicate(params, mesh), batches, batch_size=GLOBAL_BATCH, mesh=mesh,
                            num_clips=NUM_CLIPS, progress=False)
  np.savez(pathlib.Path(out_dir) / f"process_{process_id}.npz", **out)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
