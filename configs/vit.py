"""Act-Bench-ViT: MobileViTv2-0.5 on Imagenette at 160 px, the recipe of METHOD.md section 5.

    python -m actbench.main --config=configs/vit.py --workdir=DIR

Imagenette (160px) is downloaded and prepared on first use (or once with
`python -m actbench.prepare imagenette`; no TensorFlow needed).
The recipe: batch 256, AdamW lr 4e-3 (8e-3 per 512 images), decoupled weight decay 0.02 x lr
on kernels only (no decay on norm, bias and position parameters), gradient clipping at global
norm 1.0, 5 warm-up epochs from 1e-4 then cosine decay over 100 epochs to 1e-6 (105 epochs);
binary cross-entropy on targets thresholded at 0.2; random resized crop (least area 0.08) and
flip, RandAugment (2 layers, magnitude 6), mixup 0.1 and CutMix 1.0, all on the device;
evaluation on a centre crop of 0.95. One run per function. Every activation site of
MobileViTv2 takes the candidate except the relu inside its linear attention. 947 training
images are held out for validation; test accuracy is on Imagenette's validation split (it has
no test split). `--config.model.dtype=bfloat16` computes in bfloat16.
Expected accelerator time: not measured (no accelerator was lent while this was written). By
arithmetic, MobileViTv2-0.5 at 160 px costs about 1.2 GFLOP per image forward and backward, so
one function (105 epochs of 8,522 images) is about 1.1 PFLOP: minutes per function on one
current GPU, some 100-200 GPU-hours for the whole benchmark.
By default trains config.activations (the 8 baselines) in one population and writes
checkpoints, results.json and leaderboard.csv to the workdir. `--config.mode=benchmark` trains
every class of the benchmark space: Act-Bench-ViT, as a table in the workdir;
`--config.mode=search` searches it with the surrogate. `:smoke` trains a population of 4
MobileViTv2-0.5s with one attention block per stage for 8 steps at 64 px on 64 examples of
each split: about a minute on a 2-core CPU on the real Imagenette, mostly compiling (or
offline with `--config.dataset.name=synthetic:imagenette`).
"""

from configs import common


def get_config(arg: str = ""):
  config = common.imagenet_config("imagenette", image_size=160)
  config.dataset.validation_size = 947  # of Imagenette's 9,469 training images
  config.model.name = "mobilevit_v2"
  config.model.kwargs.width_multiplier = 0.5  # MobileViTv2-0.5
  common.vit_recipe(config)
  if arg == "smoke":
    common.shrink_for_smoke(config, image_size=64)
    config.model.kwargs.attn_blocks = (1, 1, 1)  # one attention block per stage
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (known: smoke)")
  return config
