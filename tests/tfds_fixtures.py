"""Tiny, real TFDS datasets prepared offline, for tests that read through tfds.data_source.

`tfds.testing.mock_data` cannot stand in for `tfds.data_source` in tfds 4.9.10: its mocked
source breaks `__getitems__` (the replacement function is not bound, so it is called without
`self`) and, as soon as `decoders=` is passed, it encodes fake images with TensorFlow, which
is not installed. So these helpers prepare real array_record datasets with TFDS's own builders
(cifar10, imagenette/160px), replacing only `_split_generators` with synthetic PIL images;
reading then goes through the exact code path of a real dataset.
"""

import os
from unittest import mock

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

NUM_CIFAR_TRAIN, NUM_CIFAR_TEST = 40, 12
NUM_NETTE_TRAIN, NUM_NETTE_VALIDATION = 12, 5
NUM_SMOKE_TRAIN, NUM_SMOKE_TEST = 24, 8  # smoke datasets: batch 8, validation 8 carved


def prepare(data_dir, tfds_name: str, splits: dict[str, list[dict]]) -> None:
  """Writes a tiny prepared copy of a TFDS dataset (array_record) into data_dir."""
  def split_generators(self, dl_manager):
    del self, dl_manager
    return {split: ((f"{split}_{i}", ex) for i, ex in enumerate(examples))
            for split, examples in splits.items()}

  builder = tfds.builder(tfds_name, data_dir=os.fspath(data_dir), file_format="array_record")
  with mock.patch.object(type(builder), "_split_generators", split_generators):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def prepare_tiny_datasets(root) -> str:
  """cifar10 (40 train, 12 test) and imagenette/160px (12 train, 5 validation) under root."""
  rng = np.random.default_rng(0)

  def cifar(n):
    return [{"image": Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)),
             "label": i % 10, "id": f"img{i}"} for i in range(n)]

  def nette(n):  # varying sizes and aspect ratios, like the real 160px JPEGs
    return [{"image": Image.fromarray(
        rng.integers(0, 256, (int(rng.integers(20, 40)), int(rng.integers(20, 60)), 3),
                     np.uint8)), "label": i % 10} for i in range(n)]

  prepare(root, "cifar10", {"train": cifar(NUM_CIFAR_TRAIN), "test": cifar(NUM_CIFAR_TEST)})
  prepare(root, "imagenette/160px",
          {"train": nette(NUM_NETTE_TRAIN), "validation": nette(NUM_NETTE_VALIDATION)})
  return os.fspath(root)


def _random_images(rng, n, low, high, num_classes, **extra):
  """n examples of random sizes in [low, high) with labels cycling through num_classes."""
  return [{"image": Image.fromarray(rng.integers(
      0, 256, (int(rng.integers(low, high)), int(rng.integers(low, high)), 3), np.uint8)),
           "label": i % num_classes, **{k: v(i) for k, v in extra.items()}} for i in range(n)]


def prepare_smoke_datasets(root) -> str:
  """What the configs' `:smoke` variants read, under root: cifar10, cifar100, imagenette/160px
  and imagenet2012, each NUM_SMOKE_TRAIN training and NUM_SMOKE_TEST test examples."""
  rng = np.random.default_rng(1)
  n, m = NUM_SMOKE_TRAIN, NUM_SMOKE_TEST
  for name, classes in (("cifar10", 10), ("cifar100", 100)):
    extra = {"id": lambda i: f"img{i}"}
    if name == "cifar100":
      extra["coarse_label"] = lambda i: i % 20
    prepare(root, name, {"train": _random_images(rng, n, 32, 33, classes, **extra),
                         "test": _random_images(rng, m, 32, 33, classes, **extra)})
  prepare(root, "imagenette/160px", {"train": _random_images(rng, n, 60, 90, 10),
                                     "validation": _random_images(rng, m, 60, 90, 10)})
  name_of = {"file_name": lambda i: f"n{i:08d}_{i}.JPEG"}
  prepare(root, "imagenet2012", {"train": _random_images(rng, n, 60, 90, 1000, **name_of),
                                 "validation": _random_images(rng, m, 60, 90, 1000, **name_of)})
  return os.fspath(root)
