"""metrics.jsonl after a kill: a resumed run drops the rows past its restored step and a half-written line."""

import json

from asd_jax.training import train_log


def test_drop_after_keeps_the_rows_up_to_the_restored_step(tmp_path):
  writer = train_log.MetricWriter(tmp_path, tensorboard=False)
  writer.write(0, {"compile_s": 1.5})
  for step in range(1, 7):
    writer.write(step, {"loss": 1.0 / step})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 7, "lo')  # the kill came in the middle of a row
  assert writer.drop_after(4) == 3  # steps 5, 6 and the cut row
  rows = train_log.read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
  writer.write(5, {"loss": 0.5})
  assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
      0, 1, 2, 3, 4, 5]
  assert writer.drop_after(5) == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_a_full_disk_names_the_log(tmp_path, monkeypatch):
  """Issue 26.3: a failed append said `[Errno 28] No space left on device`, naming no file."""
  import errno  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  writer = train_log.MetricWriter(tmp_path, tensorboard=False)
  writer.write(1, {"loss": 1.0})

  class FullDisk:  # the file object of a disk with no room left
    def __init__(self, path, mode):
      self.file = open(path, mode)  # pylint: disable=consider-using-with

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.file.close()

    def write(self, text):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(train_log, "open", FullDisk, raising=False)
  try:
    writer.write(2, {"loss": 0.5})
  except OSError as e:
    error = e
  assert str(error) == f"[Errno 28] No space left on device: '{tmp_path / 'metrics.jsonl'}'"


def test_an_invocation_killed_twice_at_one_step_leaves_one_compile_row_there(tmp_path):
  """Issue 23.8: after a kill and a resume from the same checkpoint (or from none), metrics.jsonl held two
  `step 0 compile_s` rows: the killed invocation's and the resumed one's."""
  writer = train_log.MetricWriter(tmp_path, tensorboard=False)

  def invocation(start, steps):  # what `loop.fit` writes: its compile row, then a row per step
    writer.drop_after(start)
    writer.write(start, {train_log.COMPILE: 1.5, **({"resumed": True} if start else {})})
    for step in steps:
      writer.write(step, {"loss": 1.0 / step})

  invocation(0, [1, 2])  # killed before its first checkpoint
  invocation(0, [1, 2, 3, 4, 5])  # killed after the checkpoint of step 4
  invocation(4, [5, 6])  # killed before the next one
  invocation(4, [5, 6, 7, 8])
  rows = train_log.read_jsonl(tmp_path / "metrics.jsonl")
  assert [(r["step"], train_log.COMPILE in r) for r in rows] == [
      (0, True), (1, False), (2, False), (3, False), (4, False), (4, True), (5, False), (6, False), (7, False),
      (8, False)]
  assert train_log.COMPILE == "compile_s"
