r"""The actbench launcher: parses flags and dispatches on `config.mode` (actbench/modes.py).

    python -m actbench.main --config=configs/quickstart.py --workdir=/tmp/quickstart

Modes (config.mode): search (the surrogate-guided search), benchmark (every class of a space,
written as a benchmark table), replay (search strategies replayed on a benchmark table),
report (figures and leaderboard from a workdir), train (config.activations as one population),
features (output and Fisher features of config.activations), recover (a damaged search store
rebuilt from its journal). A killed search or benchmark resumes with the same command.

A mistake in the config file or the command line prints one line and exits with status 2; one
found when the run starts (a bad dataset, model or activation, an unwritable workdir, a
damaged store: an `actbench.errors.InputError`) prints its message and exits with status 1,
before any work. `--verbosity=1` adds the traceback. Any other exception is a bug, in
actbench or below it, and keeps its traceback.

On a multi-host system (a TPU pod), run the same command on every host with --distributed.
"""

import logging as std_logging
import re
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from actbench import config_fields, errors, modes

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')


class UserError(Exception):
  """A mistake to report in one message; `status` is the exit status."""

  def __init__(self, message: str, status: int):
    super().__init__(message)
    self.status = status


def _quiet_orbax(record) -> bool:
  """Orbax logs every checkpoint step at INFO; keep its warnings, drop the rest."""
  return "orbax" not in record.pathname or record.levelno >= std_logging.WARNING


def _config_file_error(message: str) -> str:
  """'FILE, line N: Type: what' from config_flags' report of an exception in a config file
  (a traceback flattened into its message)."""
  frames = [m for m in _FRAME.finditer(message) if "site-packages" not in m["file"]]
  where = f"{frames[-1]['file']}, line {frames[-1]['line']}: " if frames else ""
  lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
  return where + (lines[-1] if lines else "the config file failed")


def _parse(argv):
  """(config, workdir, distributed) from argv, on flags of their own (so that a launch can be
  repeated in one process); each mistake raised as a UserError with status 2."""
  flag_values = flags.FlagValues()
  # sys_argv: config_flags finds the overrides to define there (sys.argv by default).
  config = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                           flag_values=flag_values, sys_argv=list(argv))
  workdir = flags.DEFINE_string("workdir", None, "Directory for the store, checkpoints and "
                                "results.", flag_values=flag_values)
  distributed = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() "
                                  "(one process per host).", flag_values=flag_values)
  for arg in argv[1:]:
    if arg.startswith("--config."):
      try:
        config_fields.check_override(arg[len("--config."):].split("=", 1)[0])
      except config_fields.ConfigError as e:
        raise UserError(str(e), 2) from e
  try:
    rest = flag_values(argv)
  except flags.Error as e:
    message = str(e)
    if "Error whilst parsing config file" in message:  # the config file raised
      raise UserError(f"{message.split(':', 1)[0]}: {_config_file_error(message)}", 2) from e
    raise UserError(message.splitlines()[0], 2) from e
  if len(rest) > 1:
    raise UserError(f"unexpected arguments {rest[1:]} (the flags are --config, --workdir, "
                    "--distributed)", 2)
  if config.value is None:
    raise UserError("--config is required, e.g. --config=configs/quickstart.py", 2)
  try:
    loaded = config.value
    list(loaded.keys())  # a config file that failed to load raises on first use
  except Exception as e:  # pylint: disable=broad-except  # config_flags' loader raises anything
    raise UserError(f"cannot load the config: {_config_file_error(str(e))}", 2) from e
  try:
    loaded = config_fields.checked(loaded)
  except config_fields.ConfigError as e:
    raise UserError(str(e), 2) from e
  return loaded, workdir.value, distributed.value


def launch(argv) -> str:
  """Parses `argv` (flags of this module only) and runs its config's mode; the text to print.

  Raises:
    UserError: a mistake in the flags, the config or the run's inputs, in one message.
  """
  config, workdir, distributed = _parse(argv)
  if distributed:
    jax.distributed.initialize()
  logging.info("process %d of %d, %d devices (%s)", jax.process_index(), jax.process_count(),
               jax.device_count(), jax.default_backend())
  try:
    return modes.run(config, workdir)
  except errors.InputError as e:  # a user's mistake; anything else is a bug: its traceback
    raise UserError(str(e) or type(e).__name__, 1) from e


def main(argv):
  logging.get_absl_handler().addFilter(_quiet_orbax)
  verbose = logging.get_verbosity() > logging.INFO  # --verbosity=1 (or -v 1) and above
  try:
    text = launch(argv)
  except UserError as e:
    if verbose:
      traceback.print_exc()
    hint = "" if verbose else " (--verbosity=1 shows the traceback)"
    print(f"actbench: error: {str(e).strip()}{hint}", file=sys.stderr)
    sys.exit(e.status)
  if jax.process_index() == 0 and text:
    print(text)


def _absl_flags(argv):
  """absl's own flags (--verbosity, --logtostderr, ...); the rest is left for `launch`."""
  return flags.FLAGS(argv, known_only=True)


if __name__ == "__main__":
  app.run(main, flags_parser=_absl_flags)
