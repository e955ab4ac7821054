"""Quickstart: a real activation-function search on scikit-learn's bundled digits, offline, CPU.

    python -m actbench.main --config=configs/quickstart.py --workdir=/tmp/quickstart

Searches the benchmark space binary(unary(x),unary(x)) (5,103 names, 2,791 functions) for the
small CNN on digits: output and Fisher features for every function, then the 8 baselines and
24 functions picked by the surrogate (UMAP + 3-NN), each trained with 3 seeds for 10 epochs.
Expected runtime: about 2 minutes on a 2-core CPU (measured 2026-12-06). Writes the store
(search.sqlite: rerun the command to resume), leaderboard.csv, surrogate_map.png,
best_functions.png and search_curve.png to the workdir and prints the leaderboard.

`:train` trains just the 8 baselines x 3 seeds (about 30 s); `:smoke` is a search of a tiny
space in about a minute, for tests.
"""

from configs import common


def get_config(arg: str = ""):
  config = common.base_config()
  config.mode = "search"
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
  config.search.budget = 32  # the 8 baselines + 24 surrogate picks
  config.search.population_size = 8  # 8 functions x 3 seeds = 24 members per round
  if arg == "train":
    config.mode = "train"
  elif arg == "smoke":
    config.train.num_epochs = 2
    config.seeds = (0,)
    config.search.unary = ("zero", "identity", "exp", "elu", "relu", "selu", "sigmoid",
                           "softplus", "softsign", "swish", "tanh")
    config.search.binary = ("add", "max")
    config.search.budget = 12
    config.search.population_size = 6
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (known: train, smoke)")
  return config
