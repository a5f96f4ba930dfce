"""What the command-line programs share: one shape, and bad input reported in one line, not a traceback.

Every program runs as `python -m asd_jax.<name>` (`weights_conversion.<name>` for the two converters; a
package's program is its `__main__.py`, as `asd_jax.pipeline` and `asd_jax.report`) and its module holds only
what makes it a program: the usage in its docstring, `define_flags()` (absl flags, and `--config` through
`ml_collections.config_flags`), `main(argv)`, one call into the library module that does the work, and

  if __name__ == "__main__":
    define_flags()
    cli.run(main)

so importing a program (tests, another program) never defines its flags. `run(main)` is `app.run(main)` where
the errors that mean "the input is wrong" (a missing or wrong-kind checkpoint, a dataset or wav problem, a
config value out of range, a misspelt `--config.x.y` override) print `error: <message>` on stderr and exit with
status 1. Their messages name the file or field; a traceback adds nothing for the user, and is still logged
with `--verbosity=1`. Any other exception is a bug and keeps its traceback. A renamed config field
(`RENAMED_FIELDS`) or flag (`run(..., renamed_flags=)`) given by its old name is one error saying the new one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import app
from absl import logging

from asd_jax import errors

# CheckpointError (asd_jax.checkpoints.converted), DatasetError (asd_jax.data.layout), WavError
# (asd_jax.audio.wav) and FileNameError are ValueErrors; OSError covers missing files and existing workdirs.
EXPECTED_ERRORS = (ValueError, OSError)


# Config fields by their old names: (pattern over the dotted path after "config.", replacement).
RENAMED_FIELDS = ((re.compile(r"(^|\.)model\.encoder$"), r"\1model.network"),
                  (re.compile(r"(^|\.)models\.([^.]+)\.train(\.|$)"), r"\1models.\2.fine_tune\3"))


def _renamed(argv: Sequence[str], renamed_flags: dict[str, str]) -> str:
  """The error for the first argument that uses an old name ("" when none does)."""
  for arg in argv[1:]:
    name = arg.split("=", 1)[0]
    if name.startswith("--config."):
      path = name[len("--config."):]
      for pattern, new in RENAMED_FIELDS:
        if pattern.search(path):
          return f"{arg}: config.{path} is now config.{pattern.sub(new, path, count=1)}"
    for old, new in renamed_flags.items():
      if name in (f"--{old}", f"--no{old}"):
        return f"{arg}: --{old} is now --{new}"
  return ""


def fail(error: BaseException, what: str = "") -> NoReturn:
  """Exits with status 1 after printing `error: [what: ]<message>` (traceback only at --verbosity=1)."""
  logging.debug("traceback of the error below", exc_info=error)
  sys.exit(f"error: {what + ': ' if what else ''}{errors.message(error)}")


def quiet_by_default() -> None:
  """Logs warnings and errors only unless `--verbosity` was given: Orbax logs every checkpoint save at INFO,
  which would bury a program's own progress lines and bars; and a failed save's tracebacks from Orbax's threads
  are dropped (`errors.quiet_orbax_error_logs`: the program's one `error:` line names the step's folder)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
    errors.quiet_orbax_error_logs()


def parse_flags(argv: Sequence[str], renamed_flags: dict[str, str] | None = None) -> list[str]:
  """absl's flag parsing, with a misspelt config field (`--config.train.epoch=2`, or a typo inside the config
  file; ml_collections suggests the right name) or an old name reported like the other bad input."""
  renamed = _renamed(argv, renamed_flags or {})
  if renamed:
    sys.exit(f"error: {renamed}")
  try:
    return app.parse_flags_with_usage(list(argv))
  except (AttributeError, KeyError) as e:
    config_args = [arg for arg in argv[1:] if arg.startswith("--config")]
    missing = re.match(r"'([^']+)'\s*(.*)", errors.message(e), re.S)
    if missing:  # an override of a field that does not exist: name the override
      field, suggestion = missing.groups()
      culprits = [arg for arg in config_args if field in arg.split("=")[0].split(".")]
      sys.exit(f"error: {' '.join(culprits or config_args)}: the config has no field {field!r}. {suggestion}")
    fail(e, " ".join(config_args))
  except EXPECTED_ERRORS as e:
    fail(e)


def run(main: Callable[[list[str]], Any], *, renamed_flags: dict[str, str] | None = None) -> None:
  """`app.run(main)`, turning `EXPECTED_ERRORS` (and config-field typos) into `error: <message>`, exit 1;
  `renamed_flags` maps old flag names to new ones."""

  def guarded_main(argv):
    try:
      return main(argv)
    except EXPECTED_ERRORS as e:
      fail(e)

  app.run(guarded_main, flags_parser=lambda argv: parse_flags(argv, renamed_flags))
