"""errors: the one unwrapper of wrapped errors."""

from asd_jax import errors


def test_message_unwraps_argument_wrappers_only():
  wrapped = AttributeError(KeyError("'epoch' did you mean 'epochs'?"))
  assert errors.message(wrapped) == "'epoch' did you mean 'epochs'?"  # KeyError's str() would add quotes
  try:
    try:
      raise OSError("disk full")
    except OSError as e:
      raise ValueError("checkpoint step 3 is unreadable") from e
  except ValueError as e:
    chained = e
  assert errors.message(chained) == "checkpoint step 3 is unreadable"  # our own message, not its cause's
  assert errors.reason(chained) == "OSError: disk full"


def test_reason_is_one_line_and_stops_at_a_cycle():
  first, second = RuntimeError("a\nsecond line See full TensorStore details: {...}"), ValueError("b")
  first.__cause__, second.__cause__ = second, first
  assert errors.reason(first) == "ValueError: b"
  assert errors.reason(RuntimeError("x\ny See full TensorStore details: {}")) == "RuntimeError: x"


def test_a_suppressed_context_is_not_the_reason():
  import json  # pylint: disable=import-outside-toplevel
  try:
    json.loads('{"seed": ')
  except json.JSONDecodeError as e:
    truncated = e
  assert isinstance(truncated.__context__, StopIteration)  # json's internal position, raised `from None`
  assert errors.reason(truncated) == "JSONDecodeError: Expecting value: line 1 column 10 (char 9)"
