"""Search: ResNet-50 on ImageNet, the standard recipe (one of the paper's real tasks).

    python -m actbench.main --config=configs/imagenet_resnet50.py --workdir=DIR

Needs ImageNet (ILSVRC 2012) prepared for TFDS: place ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in DATA_DIR/downloads/manual/, then
`tfds build imagenet2012 --data_dir=DATA_DIR --file_format=array_record` (TensorFlow needed:
`pip install -e ".[tfds-build]"`).
The recipe (He et al. 2016; Goyal et al. 2017): ResNet-50 (torchvision layout), 224 px, SGD
momentum 0.9, batch 256, learning rate 0.1 (0.1 per 256 images), multiplied by 0.1 at epochs
30, 60 and 80, 90 epochs, L2 weight decay 1e-4 on every parameter, random resized crop (least
area 0.08) and flip, evaluation on a centre crop of 0.875; bfloat16 computation. 10,000
training images are held out for validation; test accuracy is on ImageNet's validation split.
One run per function.
Searches the benchmark space binary(unary(x),unary(x)) with the surrogate: Fisher and output
features of all 2,791 functions, then the 8 baselines and surrogate picks, 50 functions in
all, 8 per population. Writes search.sqlite (rerun to resume), leaderboard.csv,
surrogate_map.png, best_functions.png and search_curve.png to the workdir.
Expected accelerator time: not measured (no accelerator was lent while this was written). By
arithmetic, about 25 GFLOP per image forward and backward, 1.27 M images x 90 epochs: some
3 EFLOP, i.e. several GPU-hours per function on a current GPU; plan a pod or many workers
for the search (`launch/tpu_pod.sh`).
`--config.mode=train` trains the 8 baselines instead; `:smoke` trains a population of 4
ResNets of one bottleneck block per stage at quarter width for 8 steps at 64 px on 64 examples
of each split: about 35 seconds on a 2-core CPU; offline, on random images of ImageNet's size:
`--config.dataset.name=synthetic:imagenet2012`.
"""

from configs import common


def get_config(arg: str = ""):
  config = common.imagenet_config("imagenet2012", image_size=224)
  config.mode = "search"
  config.dataset.validation_size = 10_000
  config.model.name = "resnet50"
  config.model.dtype = "bfloat16"
  config.train.batch_size = 256
  config.train.optimizer = "sgd"
  config.train.learning_rate = 0.1
  config.train.momentum = 0.9
  config.train.weight_decay = 1e-4
  config.train.schedule = "step"
  config.train.decay_epochs = (30, 60, 80)
  config.train.decay_factor = 0.1
  config.train.num_epochs = 90
  config.search.budget = 50  # functions evaluated, the 8 baselines included
  if arg == "smoke":
    common.shrink_for_smoke(config, image_size=64)
    config.model.kwargs.stage_sizes = (1, 1, 1, 1)  # one bottleneck block per stage...
    config.model.kwargs.width = 16  # ...at a quarter of the width
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (known: smoke)")
  return config
