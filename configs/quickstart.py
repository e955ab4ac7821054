"""Quickstart: the small CNN on scikit-learn's bundled digits, offline, on a laptop CPU.

    python -m actbench.main --config=configs/quickstart.py --workdir=/tmp/quickstart

Trains the 8 baseline activations x 3 seeds for 10 epochs in one population and prints the
leaderboard. Expected runtime: about 30 s on a 2-core CPU, most of it compiling. Writes
checkpoints, results.json and leaderboard.csv to the workdir.
`--config=configs/quickstart.py:smoke` shrinks everything to seconds, for tests.
"""

from configs import common


def get_config(arg: str = ""):
  config = common.base_config()
  config.dataset.name = "digits"  # 1,797 8x8 images, fixed 1077/360/360 split
  config.model.name = "small_cnn"  # 2 convs + 1 hidden dense layer, 3 activation sites
  config.train.batch_size = 64
  config.train.num_epochs = 10
  config.train.optimizer = "sgd"
  config.train.learning_rate = 0.05
  config.train.momentum = 0.9
  config.train.nesterov = True
  config.train.weight_decay = 5e-4
  config.train.schedule = "cosine"
  config.train.augment = False
  config.seeds = (0, 1, 2)
  if arg == "smoke":
    config.train.num_epochs = 2
    config.seeds = (0,)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (known: smoke)")
  return config
