r"""The actbench launcher: parses flags and dispatches on `config.mode` (actbench/modes.py).

    python -m actbench.main --config=configs/quickstart.py --workdir=/tmp/quickstart

Modes (config.mode): search (the surrogate-guided search), benchmark (every class of a space,
written as a benchmark table), replay (search strategies replayed on a benchmark table),
report (figures and leaderboard from a workdir), train (config.activations as one population),
features (output and Fisher features of config.activations). A killed search or benchmark
resumes with the same command.

On a multi-host system (a TPU pod), run the same command on every host with --distributed.
"""

import logging as std_logging

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from actbench import modes

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the store, checkpoints and results.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (one process per host).")


def _quiet_orbax(record) -> bool:
  """Orbax logs every checkpoint step at INFO; keep its warnings, drop the rest."""
  return "orbax" not in record.pathname or record.levelno >= std_logging.WARNING


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_quiet_orbax)
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  logging.info("process %d of %d, %d devices (%s)", jax.process_index(), jax.process_count(),
               jax.device_count(), jax.default_backend())
  config = _CONFIG.value
  if config.mode not in modes.MODES:
    raise app.UsageError(f"config.mode must be one of {modes.MODES}, got {config.mode!r}")
  text = modes.run(config, _WORKDIR.value)
  if jax.process_index() == 0 and text:
    print(text)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
