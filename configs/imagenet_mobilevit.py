"""Search: MobileViTv2-0.5 on ImageNet, the Act-Bench-ViT recipe (one of the paper's real tasks).

    python -m actbench.main --config=configs/imagenet_mobilevit.py --workdir=DIR

Needs ImageNet (ILSVRC 2012) prepared for TFDS: place ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in DATA_DIR/downloads/manual/, then
`tfds build imagenet2012 --data_dir=DATA_DIR --file_format=array_record` (TensorFlow needed:
`pip install -e ".[tfds-build]"`).
The recipe is configs/vit.py's (METHOD.md section 5: AdamW 4e-3 at batch 256 with decoupled
weight decay 0.02 x lr on kernels, clipping at 1.0, 5 warm-up epochs, cosine to 1e-6 over
105 epochs, binary cross-entropy on targets thresholded at 0.2, random resized crop,
RandAugment 2/6, mixup 0.1, CutMix 1.0, centre crop 0.95), at 256 px, MobileViTv2's own input
size, computing in bfloat16. 10,000 training images are held out for validation; test
accuracy is on ImageNet's validation split. One run per function. For a larger batch, scale
the rate: 8e-3 per 512 images.
Searches the benchmark space binary(unary(x),unary(x)) with the surrogate: Fisher and output
features of all 2,791 functions, then the 8 baselines and surrogate picks, 50 functions in
all, 8 per population. Writes search.sqlite (rerun to resume), leaderboard.csv,
surrogate_map.png, best_functions.png and search_curve.png to the workdir.
Expected accelerator time: not measured (no accelerator was lent while this was written). By
arithmetic, about 3 GFLOP per image forward and backward at 256 px, 1.28 M images x 105
epochs: some 400 PFLOP, a few GPU-hours per function, a few hundred for the search.
`--config.mode=train` trains the 8 baselines instead; `:smoke` trains a population of 4
MobileViTv2-0.5s with one attention block per stage for 8 steps at 64 px on 64 examples of
each split: about 75 seconds on a 2-core CPU, mostly compiling; offline, on random images of
ImageNet's size: `--config.dataset.name=synthetic:imagenet2012`.
"""

from configs import common, vit


def get_config(arg: str = ""):
  config = vit.get_config()
  config.mode = "search"
  config.dataset.name = "imagenet2012"
  config.dataset.image_size = 256
  config.dataset.validation_size = 10_000
  config.model.dtype = "bfloat16"
  config.search.budget = 50  # functions evaluated, the 8 baselines included
  if arg == "smoke":
    common.shrink_for_smoke(config, image_size=64)
    config.model.kwargs.attn_blocks = (1, 1, 1)  # one attention block per stage
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (known: smoke)")
  return config
