"""Act-Bench-ResNet: ResNet-56 on CIFAR-10, the recipe of He et al. (2016), section 4.2.

    python -m actbench.main --config=configs/resnet.py --workdir=DIR

CIFAR-10 is downloaded and prepared on first use (or once with
`python -m actbench.prepare cifar10`; no TensorFlow needed).
The recipe: SGD with momentum 0.9, batch 128, learning rate 0.1 divided by 10 at 32k and 48k
iterations, stopping at 64k iterations (on the 45k/5k train/validation split: epochs 91, 136
and 182), L2 weight decay 0.0001, batch norm, option A shortcuts, flips and translations
(pad 4, random 32x32 crop).
Expected accelerator time: not measured (no accelerator was lent so far). By arithmetic, one
run is 182 epochs of 45,000 images at about 0.75 GFLOP each (forward and backward), about 6
PFLOP: some 10-30 minutes per function and seed on one current GPU; the whole benchmark
(2,791 functions x 3 seeds) is one to a few thousand GPU-hours.
By default trains config.activations (the 8 baselines) x config.seeds in one population and
writes checkpoints, results.json and leaderboard.csv to the workdir. `--config.mode=search`
searches the benchmark space for this task (config.search: budget 100, populations of 8),
`--config.mode=benchmark` trains every class of it: Act-Bench-ResNet, as a table in the workdir.
`--config=configs/resnet.py:smoke` trains a population of 4 ResNet-8s for 8 steps on 64
examples of each split: about 15 seconds on a 2-core CPU on the real CIFAR-10 (or offline with
`--config.dataset.name=synthetic:cifar10`).
"""

from configs import common


def get_config(arg: str = ""):
  config = common.cifar_config("cifar10")
  config.model.name = "resnet56"
  config.train.num_epochs = 182
  config.train.learning_rate = 0.1
  config.train.weight_decay = 1e-4
  config.train.decay_epochs = (91, 136)
  if arg == "smoke":
    common.shrink_for_smoke(config)
    config.model.kwargs.depth = 8  # ResNet-8: same blocks, one per stage
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (known: smoke)")
  return config
