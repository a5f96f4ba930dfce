"""provenance.json over several invocations (issue 23.8): each one's wall time is kept, a version-1 file counts
as one invocation, an unreadable one is named and left out. The pipeline's use: tests/test_pipeline.py."""

import json

import pytest

from asd_jax import provenance


def test_each_invocation_is_added_and_the_total_is_their_sum(tmp_path):
  path = str(tmp_path / "provenance.json")
  provenance.write(path, config={"seed": 0}, started="t0", wall_s=1560.0, stage_s={"train+embed": 1500.0},
                   finished=False)  # killed during training
  earlier = provenance.earlier_invocations(path)
  assert earlier == [{"started": "t0", "finished": None, "wall_s": 1560.0, "stage_s": {"train+embed": 1500.0}}]
  provenance.write(path, config={"seed": 0}, started="t1", wall_s=47.0, stage_s={"score": 2.0}, earlier=earlier)
  info = provenance.read(path)
  assert info["version"] == 2 and info["wall_s"] == 47.0 and info["started"] == "t1" and info["finished"]
  assert [entry["wall_s"] for entry in info["invocations"]] == [1560.0, 47.0]
  assert info["total_wall_s"] == 1607.0


def test_a_version_1_file_is_one_invocation_and_an_unreadable_one_is_named(tmp_path, caplog):
  path = tmp_path / "provenance.json"
  path.write_text(json.dumps({"format": provenance.FORMAT, "version": 1, "started": "t0", "finished": "t2",
                              "wall_s": 47.0, "stage_s": {"score": 2.0}, "config": {}}))
  assert provenance.earlier_invocations(str(path)) == [
      {"started": "t0", "finished": "t2", "wall_s": 47.0, "stage_s": {"score": 2.0}}]
  path.write_text('{"format": "asd_jax.provenance", "vers')
  with caplog.at_level("WARNING"):
    assert provenance.earlier_invocations(str(path)) == []
  assert f"{path}: its earlier invocations' wall time is lost ({path}: not valid JSON" in caplog.text
  assert provenance.earlier_invocations(str(tmp_path / "none.json")) == []


@pytest.mark.parametrize("finished", [True, False])
def test_finished_is_null_only_while_running(tmp_path, finished):
  path = str(tmp_path / "provenance.json")
  provenance.write(path, config={}, started="t0", wall_s=1.0, stage_s={}, finished=finished)
  info = provenance.read(path)
  assert (info["finished"] is None) is (not finished) and info["invocations"][0]["finished"] == info["finished"]
