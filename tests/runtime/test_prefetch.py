"""DevicePrefetcher yields what the iterator yields, in order, and its saved position is the consumer's."""

import numpy as np
import pytest

from asd_jax.runtime import prefetch


class Counter:
  """A finite (or endless) stateful iterator: 0, 1, 2, ... with a saveable position."""

  def __init__(self, stop=None, fail_at=None):
    self.position, self.stop, self.fail_at = 0, stop, fail_at

  def __next__(self):
    if self.stop is not None and self.position >= self.stop:
      raise StopIteration
    if self.position == self.fail_at:
      raise OSError(f"cannot read item {self.position}")
    self.position += 1
    return {"x": np.array([self.position - 1])}

  def get_state(self):
    return {"position": self.position}

  def set_state(self, state):
    self.position = state["position"]


def _values(batches, n):
  return [int(next(batches)["x"][0]) for _ in range(n)]


@pytest.mark.parametrize("size", [0, 1, 3])
def test_same_batches_in_order_and_put_applied(size):
  put = lambda b: {"x": b["x"] * 10}
  with prefetch.DevicePrefetcher(Counter(stop=7), put, size=size) as batches:
    assert [int(b["x"][0]) for b in batches] == [0, 10, 20, 30, 40, 50, 60]
    with pytest.raises(StopIteration):
      next(batches)


@pytest.mark.parametrize("size", [0, 2])
def test_state_is_the_consumers_position_and_resumes_exactly(size):
  source = Counter()
  batches = prefetch.DevicePrefetcher(source, lambda b: b, size=size)
  assert batches.get_state() == {"position": 0}
  assert _values(batches, 3) == [0, 1, 2]
  saved = batches.get_state()
  assert saved == {"position": 3}  # though the thread may have read further ahead
  assert _values(batches, 2) == [3, 4]
  batches.set_state(saved)
  assert _values(batches, 3) == [3, 4, 5]
  batches.close()
  # A fresh wrapper over a fresh iterator, restored from the saved position (a resumed run).
  resumed = prefetch.DevicePrefetcher(Counter(), lambda b: b, size=size)
  resumed.set_state(saved)
  assert _values(resumed, 2) == [3, 4]
  resumed.close()


def test_close_then_continue_loses_nothing_from_a_stateful_iterator():
  batches = prefetch.DevicePrefetcher(Counter(), lambda b: b, size=3)
  assert _values(batches, 2) == [0, 1]
  batches.close()
  assert batches.get_state() == {"position": 2}
  assert _values(batches, 2) == [2, 3]
  batches.close()


def test_errors_reach_the_consumer_after_the_good_batches():
  batches = prefetch.DevicePrefetcher(Counter(fail_at=2), lambda b: b, size=2)
  assert _values(batches, 2) == [0, 1]
  with pytest.raises(OSError, match="cannot read item 2"):
    next(batches)
  with pytest.raises(ValueError, match=">= 0"):
    prefetch.DevicePrefetcher(Counter(), lambda b: b, size=-1)
