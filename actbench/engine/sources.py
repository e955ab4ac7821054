"""Where examples come from: arrays in memory, TFDS array_record files, random examples.

A source holds the examples of one official split, in a fixed order, and reads any of them by
index: `len(source)` and `source.read(indices) -> (images, labels int32)`; `source.close()`
ends the threads it decodes on (it can still be read afterwards: they start again). `data.py`
carves the validation split and batches; nothing here shuffles. Every source also says what it
is (`identity`), so that a search store can refuse results computed on other data.
actbench's prepared files are read by `prepare.open_split`, with `decode_image` from here.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import io
import os
import threading
import weakref

import numpy as np

from actbench import errors


def decode_image(data: bytes, size: int | None) -> np.ndarray:
  """An encoded image as uint8 RGB; with `size`, shorter side resized to `size`, centre crop."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  # encoded images only
  image = Image.open(io.BytesIO(data))
  if size is not None:
    image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that still covers size
  image = image.convert("RGB")
  if size is not None:
    w, h = image.size
    w, h = max(size, round(w * size / min(w, h))), max(size, round(h * size / min(w, h)))
    image = image.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
  return np.asarray(image)


class DecodingPool:
  """Threads that decode one source's images: started by the first `map`, ended by `close`
  or when the pool is garbage collected, so a source that is never read starts none and a
  closed or dropped one leaves none behind. One pool serves every read: starting the threads
  anew for every batch would cost milliseconds per batch."""

  THREAD_NAME = "actbench-decode"

  def __init__(self, num_threads: int):
    self.num_threads = num_threads
    self._lock = threading.Lock()
    self._executor = None
    self._finalizer = None

  def map(self, fn, items) -> list:
    with self._lock:
      if self._executor is None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.num_threads, thread_name_prefix=self.THREAD_NAME)
        # Holds the executor, not self: the threads end when the pool is collected.
        self._finalizer = weakref.finalize(self, self._executor.shutdown, wait=False)
      # Submitted under the lock, so that a `close` on another thread waits for this work.
      results = self._executor.map(fn, items)
    return list(results)

  def close(self) -> None:
    """Ends the threads (waiting for decoding in progress); a later `map` starts new ones."""
    with self._lock:
      executor, finalizer, self._executor, self._finalizer = (self._executor, self._finalizer,
                                                              None, None)
    if executor is not None:
      finalizer.detach()
      executor.shutdown(wait=True)


class ArraySource:
  """Examples held in memory (any input shape; labels become int32)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, identity: str | None = None):
    self.images, self.labels = images, np.asarray(labels).astype(np.int32)
    self._identity = identity

  def __len__(self) -> int:
    return len(self.labels)

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.images[indices], self.labels[indices]

  def close(self) -> None:
    """Nothing to end: arrays need no threads."""

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
  """Examples read by index from a TFDS data source, decoded on `num_threads` threads."""

  def __init__(self, source, size: int | None, num_threads: int, *, identity: str,
               image_key: str = "image", label_key: str = "label", channels: int = 3):
    self.source, self.size = source, size
    self._pool = DecodingPool(num_threads)
    self.identity = identity
    self.image_key, self.label_key, self.channels = image_key, label_key, channels

  def __len__(self) -> int:
    return len(self.source)

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    records = self.source.__getitems__([int(i) for i in indices])
    # Decoded as RGB; a grayscale image's channels are equal, so its first one is exact.
    images = self._pool.map(
        lambda r: decode_image(r[self.image_key], self.size)[..., :self.channels], records)
    return np.stack(images), np.array([r[self.label_key] for r in records], np.int32)

  def close(self) -> None:
    self._pool.close()


class RandomSource:
  """`num_examples` random uint8 images of `shape` (or float32 in [0, 1] with `float_images`)
  with random labels below `num_classes`, each image made when read from (seed, its index)
  alone: a dataset's full size in no memory, the same on every read."""

  def __init__(self, num_examples: int, shape: tuple[int, ...], num_classes: int, *, seed: int,
               float_images: bool = False, identity: str):
    self.shape, self.float_images = tuple(shape), float_images
    self._seed = seed % 2**64  # numpy seeds are non-negative
    self.labels = np.random.default_rng([self._seed, 0]).integers(0, num_classes, num_examples,
                                                                  dtype=np.int32)
    self.identity = identity

  def __len__(self) -> int:
    return len(self.labels)

  def _image(self, index: int) -> np.ndarray:
    pixels = np.random.default_rng([self._seed, 1, index]).bytes(int(np.prod(self.shape)))
    image = np.frombuffer(pixels, np.uint8).reshape(self.shape)
    return image.astype(np.float32) / 255.0 if self.float_images else image

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    images = np.stack([self._image(int(i)) for i in indices]) if len(indices) else np.zeros(
        (0, *self.shape), np.float32 if self.float_images else np.uint8)
    return images, self.labels[indices]

  def close(self) -> None:
    """Nothing to end: images are made on the calling thread."""


def load_all(source, chunk: int = 2048) -> ArraySource:
  """Every example of `source` read into memory (same order, same identity); `source` is
  closed, its work done."""
  parts = [source.read(np.arange(i, min(i + chunk, len(source))))
           for i in range(0, len(source), chunk)]
  source.close()
  return ArraySource(np.concatenate([p[0] for p in parts]),
                     np.concatenate([p[1] for p in parts]), identity=source.identity)


def digits() -> ArraySource:
  """scikit-learn's bundled 8x8 digits as float images in [0, 1]."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel  # slow
  bunch = load_digits()
  return ArraySource((bunch.images[..., None] / 16.0).astype(np.float32), bunch.target)


# ---------------------------------------------------------------- TFDS


class DatasetNotFoundError(errors.InputError, ValueError):
  """A dataset is neither prepared nor allowed to be prepared now."""


def _raw_bytes_decoder():
  """A TFDS decoder that leaves encoded images to `decode_image` (JPEG draft mode,
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
