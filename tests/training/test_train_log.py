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
