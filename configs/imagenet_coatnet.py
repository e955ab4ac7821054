"""Search: CoAtNet-0 on ImageNet, the recipe of Dai et al. 2021 (one of the paper's real tasks).

    python -m actbench.main --config=configs/imagenet_coatnet.py --workdir=DIR

Needs ImageNet (ILSVRC 2012) prepared for TFDS: place ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in DATA_DIR/downloads/manual/, then
`tfds build imagenet2012 --data_dir=DATA_DIR --file_format=array_record` (TensorFlow needed:
`pip install -e ".[tfds-build]"`).
The recipe (CoAtNet's ImageNet-1K setting): 224 px, batch 4096, AdamW with peak learning rate
1e-3 after 10,000 warm-up steps (about 32 epochs at this batch), linear decay, 300 epochs,
decoupled weight decay 0.05 x lr on kernels only, gradient clipping at 1.0, label smoothing
0.1, RandAugment (2 layers, magnitude 15), mixup 0.8, stochastic depth 0.2, random resized
crop and flip, centre crop 0.875 for evaluation; bfloat16 computation. GELU is replaced at
every activation site; the squeeze-excitation gate (sigmoid) and the attention softmax stay.
10,000 training images are held out for validation; test accuracy is on ImageNet's
validation split. One run per function. Batch 4096 needs a pod slice; on fewer chips lower
the batch and the rate together.
Searches the benchmark space binary(unary(x),unary(x)) with the surrogate: Fisher and output
features of all 2,791 functions, then the 8 baselines and surrogate picks, 50 functions in
all, 8 per population. Writes search.sqlite (rerun to resume), leaderboard.csv,
surrogate_map.png, best_functions.png and search_curve.png to the workdir.
Expected accelerator time: not measured (no accelerator was lent while this was written). By
arithmetic, about 25 GFLOP per image forward and backward, 1.27 M images x 300 epochs: some
10 EFLOP per function, a day or more of one current GPU; plan a pod (`launch/tpu_pod.sh`).
`--config.mode=train` trains the 8 baselines instead; `:smoke` trains a population of 4
narrow CoAtNets of one block per stage for 8 steps at 64 px on 64 examples of each split:
about 45 seconds on a 2-core CPU; offline, on random images of ImageNet's size:
`--config.dataset.name=synthetic:imagenet2012`.
"""

from configs import common


def get_config(arg: str = ""):
  config = common.imagenet_config("imagenet2012", image_size=224)
  config.mode = "search"
  config.dataset.validation_size = 10_000
  config.model.name = "coatnet0"
  config.model.dtype = "bfloat16"
  config.model.kwargs.drop_path_rate = 0.2  # stochastic depth
  config.train.batch_size = 4096
  config.train.optimizer = "adamw"
  config.train.learning_rate = 1e-3
  config.train.weight_decay = 0.05  # decoupled; optax multiplies it by the rate
  config.train.weight_decay_on = "kernels"
  config.train.grad_clip_norm = 1.0
  config.train.num_epochs = 300
  config.train.warmup_epochs = 10_000 * 4096 / 1_271_167  # 10,000 steps
  config.train.schedule = "linear"
  config.train.label_smoothing = 0.1
  config.train.randaugment_layers = 2
  config.train.randaugment_magnitude = 15.0
  config.train.mixup_alpha = 0.8
  config.train.steps_per_call = 10
  config.search.budget = 50  # functions evaluated, the 8 baselines included
  if arg == "smoke":
    common.shrink_for_smoke(config, image_size=64)
    config.model.kwargs.depths = (1, 1, 1, 1, 1)  # one block per stage...
    config.model.kwargs.dims = (16, 16, 32, 32, 64)  # ...narrow,
    config.model.kwargs.head_dim = 16  # with 2 and 4 heads
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (known: smoke)")
  return config
