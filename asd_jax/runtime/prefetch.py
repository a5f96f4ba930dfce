"""Prefetching batches onto the devices in a background thread, with a checkpointable position.

While the devices run step `i`, a worker thread reads batch `i + 1` (decoding, cropping: host work) and
starts its transfer (`put`, e.g. `sharding.put_batch`), so neither waits for the other. The wrapper keeps
the underlying iterator's state as it was right after each batch it hands out, so `get_state()` names the
position of the *consumer*, not of the read-ahead, and a resumed run sees exactly the batches an
uninterrupted one would. `size=0` reads and puts synchronously (no thread), with the same interface.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_END = object()


class _Failure:
  def __init__(self, error: BaseException):
    self.error = error


class DevicePrefetcher:
  """Iterates `put(batch)` for the batches of `iterator`, reading up to `size` batches ahead.

  `get_state`/`set_state` pass through to `iterator` (a Grain iterator, say) when it has them. Call
  `close()` (or use it as a context manager) to stop the worker thread early.
  """

  def __init__(self, iterator: Iterator, put: Callable[[Any], Any], size: int = 2):
    if size < 0:
      raise ValueError(f"prefetch size must be >= 0, got {size}")
    self._iterator, self._put, self._size = iterator, put, size
    self._stateful = hasattr(iterator, "get_state")
    self._thread: threading.Thread | None = None
    self._queue: queue.Queue = queue.Queue(maxsize=max(size, 1))
    self._stop = threading.Event()
    self._state = None  # underlying state right after the last batch handed out
    self._tracking = False  # whether `_state` is the position (the underlying iterator may be ahead)
    self._done = False

  def __iter__(self) -> DevicePrefetcher:
    return self

  def __enter__(self) -> DevicePrefetcher:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _work(self) -> None:
    try:
      while not self._stop.is_set():
        try:
          batch = next(self._iterator)
        except StopIteration:
          self._offer(_END)
          return
        state = self._iterator.get_state() if self._stateful else None
        if not self._offer((self._put(batch), state)):
          return
    except BaseException as error:  # noqa: BLE001  (handed to the consumer, raised there)
      self._offer(_Failure(error))

  def _offer(self, item: Any) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def __next__(self) -> Any:
    if self._done:
      raise StopIteration
    if self._size == 0:
      return self._put(next(self._iterator))
    if self._thread is None:
      if self._tracking and self._stateful:  # closed after reading ahead: rewind to the consumer's position
        self._iterator.set_state(self._state)
      elif self._stateful:
        self._state = self._iterator.get_state()
      self._tracking = True
      self._thread = threading.Thread(target=self._work, name="device-prefetch", daemon=True)
      self._thread.start()
    item = self._queue.get()
    if item is _END:
      self._done = True
      raise StopIteration
    if isinstance(item, _Failure):
      self._done = True
      raise item.error
    batch, self._state = item
    return batch

  def get_state(self) -> Any:
    """The underlying iterator's state right after the last batch this wrapper returned."""
    return self._state if self._tracking else self._iterator.get_state()

  def set_state(self, state: Any) -> None:
    """Drops the batches read ahead and moves the underlying iterator to `state`."""
    self.close()
    self._iterator.set_state(state)
    self._tracking = False
    self._done = False

  def close(self) -> None:
    """Stops the worker thread and discards what it read ahead (a stateful iterator is rewound to the
    consumer's position if iteration goes on; a plain one loses those batches)."""
    if self._thread is not None:
      self._stop.set()
      while self._thread.is_alive():
        try:
          self._queue.get(timeout=0.05)
        except queue.Empty:
          pass
      self._thread.join()
      self._thread = None
    self._stop.clear()
    self._queue = queue.Queue(maxsize=max(self._size, 1))
