"""How an error that a library wrapped is reported: the one unwrapper, and Orbax's late callbacks and error logs
silenced (the failure itself reaches the caller as one exception naming its step or folder).

`innermost(error)` is the error at the bottom of its wrappers: an exception whose only argument is another
exception (ml_collections raises `AttributeError(KeyError(message))` for a misspelt config field) and, with
`causes=True`, the `__cause__` / `__context__` chain (Orbax wraps TensorStore's error, and its own text holds
the whole TensorStore spec). A context its raiser suppressed (`raise ... from None`) is not followed: `json`
raises its `JSONDecodeError` from None over an internal `StopIteration(position)`, which says nothing. `message(error)` is what the CLIs print of it; `reason(error)` a one-line
`Type: first line` for a message that names its own subject (a checkpoint step, a folder) and says why.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

from absl import logging


def innermost(error: BaseException, *, causes: bool = False) -> BaseException:
  """The error at the bottom of `error`'s wrappers (see the module docstring)."""
  seen = {id(error)}
  while True:
    inner = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], BaseException) else None
    if inner is None and causes:
      inner = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if inner is None or id(inner) in seen:
      return error
    error = inner
    seen.add(id(error))


def message(error: BaseException) -> str:
  """The message of `innermost(error)`: its only string argument as it is (no quotes around a KeyError's)."""
  error = innermost(error)
  return error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)


def reason(error: BaseException) -> str:
  """`Type: first line` of the innermost cause of `error` (at most 300 characters; TensorStore's advice cut)."""
  error = innermost(error, causes=True)
  text = str(error).split(" See full TensorStore details")[0].strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


_default_unraisablehook = None


def _drop_closed_event_loop(unraisable) -> None:
  error = unraisable.exc_value
  if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
    logging.debug("dropped a late TensorStore callback on Orbax's closed event loop: %s", error)
    return
  _default_unraisablehook(unraisable)


def quiet_late_callbacks() -> None:
  """After a failed Orbax restore, TensorStore reads still in flight complete on an event loop Orbax has
  already closed, and Python prints each as an "Exception ignored ... Event loop is closed" traceback, at
  any later moment. Those (and only those) are dropped from then on; the failure itself is reported."""
  global _default_unraisablehook
  if _default_unraisablehook is None:
    _default_unraisablehook = sys.unraisablehook
    sys.unraisablehook = _drop_closed_event_loop


class _OrbaxErrorLogs(std_logging.Filter):
  """Drops the ERROR records logged from Orbax's modules (its background save threads)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not (record.levelno >= std_logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


_orbax_filter = _OrbaxErrorLogs()


def quiet_orbax_error_logs(enabled: bool = True) -> None:
  """A failed checkpoint save makes Orbax log a traceback from each of its threads (three for one full disk, more
  as the program winds down) before the failure reaches the caller, where `checkpoints.train_state` raises it as
  one error naming the step's folder. With `enabled`, Orbax's ERROR records (and only those) are dropped from
  absl's log; `enabled=False` shows them again. The programs call it unless `--verbosity` is given
  (`cli.quiet_by_default`)."""
  logger = logging.get_absl_logger()
  if enabled:
    logger.addFilter(_orbax_filter)  # once: addFilter ignores a filter already there
  else:
    logger.removeFilter(_orbax_filter)
