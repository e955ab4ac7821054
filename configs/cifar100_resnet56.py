"""Search: ResNet-56 on CIFAR-100, with Act-Bench-ResNet's recipe (one of the paper's real tasks).

    python -m actbench.main --config=configs/cifar100_resnet56.py --workdir=DIR

CIFAR-100 is downloaded and prepared on first use (or once with
`python -m actbench.prepare cifar100`; no TensorFlow needed).
The recipe is configs/resnet.py's (He et al. 2016: SGD momentum 0.9, batch 128, lr 0.1 / 10 at
epochs 91 and 136, 182 epochs, L2 1e-4, flips and translations) with 100 classes; 5,000
training images are held out for validation, 3 seeds per function (median).
Searches the benchmark space binary(unary(x),unary(x)) with the surrogate (config.search:
features of all 2,791 functions, then the 8 baselines and surrogate picks, 100 functions in
all, 8 per population). Writes search.sqlite (rerun to resume), leaderboard.csv,
surrogate_map.png, best_functions.png and search_curve.png to the workdir.
Expected accelerator time: not measured (no accelerator was lent while this was written). By
arithmetic, one function trains 182 epochs of 45,000 images at about 0.75 GFLOP each (forward
and backward), about 6 PFLOP: some 10-30 minutes per function and seed on one current GPU,
so some 50-150 GPU-hours for the search.
`--config.mode=train` trains the 8 baselines instead; `:smoke` trains a population of 4
ResNet-8s for 8 steps on 64 examples of each split: about 15 seconds on a 2-core CPU on the
real CIFAR-100 (or offline with `--config.dataset.name=synthetic:cifar100`).
"""

from configs import common, resnet


def get_config(arg: str = ""):
  config = resnet.get_config()
  config.mode = "search"
  config.dataset.name = "cifar100"
  config.search.budget = 100  # functions evaluated, the 8 baselines included
  if arg == "smoke":
    common.shrink_for_smoke(config)
    config.model.kwargs.depth = 8  # ResNet-8: same blocks, one per stage
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (known: smoke)")
  return config
