"""Where examples come from: arrays in memory, TFDS array_record files, actbench's prepared files.

A source holds the examples of one official split, in a fixed order, and reads any of them by
index: `len(source)` and `source.read(indices) -> (images, labels int32)`. `data.py` carves
the validation split and batches; nothing here shuffles. Every source also says what it is
(`identity`), so that a search store can refuse results computed on other data.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import os

import numpy as np

from actbench.engine import prepare


class ArraySource:
  """Examples held in memory (any input shape; labels become int32)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, identity: str | None = None):
    self.images, self.labels = images, np.asarray(labels).astype(np.int32)
    self._identity = identity

  def __len__(self) -> int:
    return len(self.labels)

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.images[indices], self.labels[indices]

  @property
  def identity(self) -> str:
    """A digest of the arrays (computed once): equal data, equal identity."""
    if self._identity is None:
      digest = hashlib.sha256()
      for array in (self.images, self.labels):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
      self._identity = f"arrays:{digest.hexdigest()[:32]}"
    return self._identity


class RecordSource:
  """Examples read by index from a TFDS data source, decoded on a thread pool."""

  def __init__(self, source, size: int | None, pool: concurrent.futures.Executor, *,
               identity: str, image_key: str = "image", label_key: str = "label",
               channels: int = 3):
    self.source, self.size, self.pool = source, size, pool
    self.identity = identity
    self.image_key, self.label_key, self.channels = image_key, label_key, channels

  def __len__(self) -> int:
    return len(self.source)

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    records = self.source.__getitems__([int(i) for i in indices])
    # Decoded as RGB; a grayscale image's channels are equal, so its first one is exact.
    images = list(self.pool.map(
        lambda r: prepare.decode_image(r[self.image_key], self.size)[..., :self.channels],
        records))
    return np.stack(images), np.array([r[self.label_key] for r in records], np.int32)


def load_all(source, chunk: int = 2048) -> ArraySource:
  """Every example of `source` read into memory (same order, same identity)."""
  parts = [source.read(np.arange(i, min(i + chunk, len(source))))
           for i in range(0, len(source), chunk)]
  return ArraySource(np.concatenate([p[0] for p in parts]),
                     np.concatenate([p[1] for p in parts]), identity=source.identity)


def digits() -> ArraySource:
  """scikit-learn's bundled 8x8 digits as float images in [0, 1]."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel  # slow
  bunch = load_digits()
  return ArraySource((bunch.images[..., None] / 16.0).astype(np.float32), bunch.target)


# ---------------------------------------------------------------- TFDS


class DatasetNotFoundError(ValueError):
  """A dataset is neither prepared nor allowed to be prepared now."""


def _raw_bytes_decoder():
  """A TFDS decoder that leaves encoded images to `prepare.decode_image` (JPEG draft mode,
  fixed size, our threads): TFDS's own decoding needs TensorFlow."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  class RawBytes(tfds.decode.Decoder):

    def decode_example(self, serialized_example):
      return serialized_example

    def decode_example_np(self, serialized_example):
      return serialized_example

  return RawBytes()


def has_tensorflow() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def open_tfds(name: str, tfds_name: str, split: str, data_dir: str, *, image_key: str = "image",
              manual: bool = False):
  """A TFDS random-access source, or a DatasetNotFoundError that says how to prepare it."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False,
                            decoders={image_key: _raw_bytes_decoder()})
  except (NotImplementedError, ValueError, FileNotFoundError) as e:
    build = f"tfds build {tfds_name} --data_dir={data_dir} --file_format=array_record"
    how = f"Prepare it once with\n  {build}"
    if manual:
      how = (f"ImageNet cannot be downloaded automatically: place ILSVRC2012_img_train.tar and "
             f"ILSVRC2012_img_val.tar in {os.path.join(data_dir, 'downloads', 'manual')}/, "
             f"then run\n  {build}")
    if not has_tensorflow():
      how += ('\n`tfds build` needs TensorFlow, which actbench does not install: '
              'pip install -e ".[tfds-build]" (brings tensorflow-cpu).')
    raise DatasetNotFoundError(
        f"Dataset '{name}' (TFDS '{tfds_name}', split '{split}') is not prepared as "
        f"random-access array_record files in data_dir={data_dir}. {how}\n(A copy built "
        f"without --file_format=array_record cannot be read by index: rebuild it.)") from e


def tfds_identity(source, tfds_name: str, split: str) -> str:
  info = getattr(source, "dataset_info", None)
  version = getattr(info, "version", "unknown")
  return f"tfds:{tfds_name}:{version}:{split}:{len(source)}"
