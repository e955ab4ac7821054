"""Act-Bench-CNN: All-CNN-C on CIFAR-10, the recipe of Springenberg et al. (2015).

    python -m actbench.main --config=configs/cnn.py --workdir=DIR

CIFAR-10 is downloaded and prepared on first use (or once with
`python -m actbench.prepare cifar10`; no TensorFlow needed).
The recipe: SGD with momentum 0.9, learning rate 0.01 multiplied by 0.1 after epochs 200, 250
and 300, 350 epochs, L2 weight decay 0.001, dropout 0.2 on the input and 0.5 after each
stride-2 conv, flips and translations (pad 4, random 32x32 crop). The paper does not state a
batch size; 128 is used here. 5,000 training images are held out for validation.
Expected accelerator time: not measured (no accelerator was lent so far). By arithmetic, one
run is 350 epochs of 45,000 images at about 1.6 GFLOP each (forward and backward), about 25
PFLOP: from tens of minutes to an hour per function and seed on one current GPU; the whole
benchmark (2,791 functions x 3 seeds) is thousands of GPU-hours.
By default trains config.activations (the 8 baselines) x config.seeds in one population and
writes checkpoints, results.json and leaderboard.csv to the workdir. `--config.mode=search`
searches the benchmark space for this task (config.search: budget 100, populations of 8),
`--config.mode=benchmark` trains every class of it: Act-Bench-CNN, as a table in the workdir.
`--config=configs/cnn.py:smoke` trains a population of 4 for 8 steps on 64 examples of each
split: about 20 seconds on a 2-core CPU on the real CIFAR-10; offline, on random images of its
shape: `--config.dataset.name=synthetic:cifar10`.
"""

from configs import common


def get_config(arg: str = ""):
  config = common.cifar_config("cifar10")
  config.model.name = "allcnnc"
  config.train.num_epochs = 350
  config.train.learning_rate = 0.01
  config.train.weight_decay = 0.001
  config.train.decay_epochs = (200, 250, 300)
  if arg == "smoke":
    common.shrink_for_smoke(config)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (known: smoke)")
  return config
