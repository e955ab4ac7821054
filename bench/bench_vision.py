"""Step time and memory per population member for the ImageNet-class models, and the largest
population that fits on the device.

    python -m bench.bench_vision [--models mobilevit resnet50] [--image-size 160]
                                 [--batch-size 256] [--max-population 64] [--steps 10]

Target (issue 7, on a GPU): MobileViTv2-0.5 with the Act-Bench-ViT recipe (configs/vit.py)
and ResNet-50 with configs/imagenet_resnet50.py's, both at 160 px: seconds per training step
and device memory per population member, and the largest population that fits. Population
sizes double from 1 until the device runs out of memory (or --max-population). Data are
random images (`data.synthetic`), so the host never limits the step; each step is the whole
recipe: augmentation (RandAugment, mixup/CutMix for the ViT recipe), forward, backward, AdamW
or SGD, for every member. On CPU use small settings, e.g.
`--image-size 64 --batch-size 8 --max-population 2 --steps 2`.
"""

import argparse
import time

import jax
import numpy as np

from actbench.engine import data, train
from actbench.engine import trainer as trainer_lib
from actbench.expr import operators
from configs import imagenet_resnet50, vit

RECIPES = {"mobilevit": vit.get_config, "resnet50": imagenet_resnet50.get_config}


def peak_device_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def recipe(model: str, args):
  config = RECIPES[model]()
  config.dataset.image_size = args.image_size
  config.train.batch_size = args.batch_size
  config.train.steps_per_call = args.steps
  if args.dtype:
    config.model.dtype = args.dtype
  return config


def measure(config, dataset, population: int, args) -> dict:
  """Compile and time `args.steps` training steps of `population` members."""
  names = [f"{b}(x)" for b in operators.BASELINES]
  names = (names * (population // len(names) + 1))[:population]
  encoding, _ = train.population_groups(config, names)[0]
  trainer = trainer_lib.PopulationTrainer(config, dataset, encoding)
  state = trainer.init(np.arange(population, dtype=np.int32))
  codes = trainer.put_members(encoding.encode(names))
  seeds = trainer.put_members(np.arange(population, dtype=np.int32))
  start = time.perf_counter()
  state, _ = trainer.train_epoch(state, codes, seeds, epoch=0)  # compiles, then runs
  jax.block_until_ready(state)
  first = time.perf_counter() - start
  start = time.perf_counter()
  state, _ = trainer.train_epoch(state, codes, seeds, epoch=1)
  jax.block_until_ready(state)
  step = (time.perf_counter() - start) / args.steps
  peak = peak_device_bytes()
  return {"population": population, "step_s": step, "step_per_member_s": step / population,
          "compile_s": first - step * args.steps,
          "peak_gb_per_member": None if peak is None else peak / population / 2**30}


def _out_of_memory(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "OOM" in text


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
  parser.add_argument("--image-size", type=int, default=160)
  parser.add_argument("--batch-size", type=int, default=256)
  parser.add_argument("--max-population", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--dtype", default="", help="override config.model.dtype (e.g. bfloat16)")
  args = parser.parse_args()
  print(f"devices: {jax.devices()}; {args.image_size} px, batch {args.batch_size} per member")
  for model in args.models:
    config = recipe(model, args)
    # One epoch of random images, shared by every population size.
    dataset = data.synthetic(config.dataset.name, num_train=args.batch_size * args.steps,
                             num_validation=0, num_test=0, image_size=args.image_size)
    largest, population = 0, 1
    while population <= args.max_population:
      try:
        row = measure(config, dataset, population, args)
      except Exception as error:  # pylint: disable=broad-except
        if not _out_of_memory(error):
          raise
        print(f"{model}: population {population} does not fit ({type(error).__name__})")
        break
      largest = population
      memory = ("n/a" if row["peak_gb_per_member"] is None
                else f"{row['peak_gb_per_member']:.2f} GB")
      print(f"{model}: population {population:3d}: step {row['step_s'] * 1e3:8.1f} ms, "
            f"{row['step_per_member_s'] * 1e3:7.1f} ms per member, peak {memory} per member, "
            f"compile {row['compile_s']:.1f} s", flush=True)
      population *= 2
    print(f"{model}: largest population that fits: {largest}"
          f"{'' if population <= args.max_population else ' (limit reached, may fit more)'}")


if __name__ == "__main__":
  main()
