r"""The actbench launcher: parses flags and dispatches on `config.mode`.

    python -m actbench.main --config=configs/quickstart.py --workdir=/tmp/quickstart

Modes (config.mode):
  train     train config.activations x config.seeds as one population; writes results.json
            and leaderboard.csv to the workdir and prints the leaderboard.
  features  output and Fisher features (config.fisher) of config.activations; writes
            features.npz to the workdir.

On a multi-host system (a TPU pod), run the same command on every host with --distributed.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from actbench import features, fisher, report, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (one process per host).")
MODES = ("train", "features")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  logging.info("process %d of %d, %d devices (%s)", jax.process_index(), jax.process_count(),
               jax.device_count(), jax.default_backend())
  config = _CONFIG.value
  if config.mode not in MODES:
    raise app.UsageError(f"config.mode must be one of {MODES}, got {config.mode!r}")
  names = list(config.activations)
  if config.mode == "features":
    fisher_result = fisher.features(config, names)
    outputs = features.outputs(names, normalize=bool(config.population.normalize))
    if _WORKDIR.value:
      logging.info("wrote %s", report.write_features(names, outputs, fisher_result,
                                                      _WORKDIR.value))
    print(f"{len(names)} activations: output features {outputs.shape}, Fisher features "
          f"{fisher_result.features.shape} ({config.fisher.method}), "
          f"{len(fisher_result.failed)} failed")
    return
  result = train.train_population(config, names, list(config.seeds), workdir=_WORKDIR.value)
  if _WORKDIR.value:
    for path in report.write(result, _WORKDIR.value):
      logging.info("wrote %s", path)
  if jax.process_index() == 0:
    print(report.format_table(report.leaderboard(result)))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
