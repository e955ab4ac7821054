"""Image-classification data for population training: same batches for every member, resumable.

Every member of a population trains on the same batches, and a killed run must resume with
bit-identical batches, so a batch is a pure function of (seed, epoch, step): `batch_indices`
draws each epoch's permutation from a counter-based hash (numpy-version independent) and
`Split.gather` reads those examples. The host only reads and decodes (and resizes ImageNet-like
images to one fixed size); augmentation and normalization are pure, jittable JAX functions
that run on the device with one PRNG key per example.

    from actbench.engine import data
    ds = data.load('cifar10', validation_size=5000, seed=0)    # or 'digits': offline
    for batch in ds.train.batches(128, seed=0, epoch=3, start_step=17):
      x = ds.preprocess(batch['image'], key=key, train=True)   # (128, 32, 32, 3) float32

Datasets: `digits` (scikit-learn's 8x8 digits, bundled, fixed 1077/360/360 split),
`cifar10`, `cifar100` (held in memory as uint8), `imagenette` (160px variant) and
`imagenet2012` (read lazily by index; each image is decoded, its shorter side resized to
image_size / 0.875 and centre-cropped to a square, so batches stack). The validation split
is carved from the training split by `seed`; test accuracy uses the official test split, or
the official validation split where there is no test split (Imagenette, ImageNet).

TFDS datasets are read with `tfds.data_source` (random access, no TensorFlow), so they
must be prepared once as array_record files; `DatasetNotFoundError` says how. `synthetic(name)`
holds random images shaped like a dataset's, for speed benchmarks and trying a config.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import math
import os
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from actbench.engine import augment

Batch = dict[str, np.ndarray]  # 'image': (B, H, W, C), 'label': (B,) int32 [, 'mask': (B,) bool]

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_RESIZE_RATIO = 0.875  # host images are stored at image_size / 0.875 (256 for 224)
_DIGITS_SEED = 20_231_210  # fixes the digits split, whatever the user's seed
_CARVE, _SHUFFLE = 1, 2  # hash domains: validation carving, epoch shuffling


@dataclasses.dataclass(frozen=True)
class _Spec:
  tfds_name: str | None  # None: built in
  num_classes: int
  test_split: str  # the TFDS split reported as test
  kind: str  # 'digits', 'cifar' or 'imagenet': decides augmentation
  validation_size: int  # default count carved from train
  image_size: int  # default network input side
  mean: tuple[float, ...]
  std: tuple[float, ...]
  in_memory: bool  # default
  manual: bool = False  # source files must be downloaded by hand


_SPECS = {
    'digits': _Spec(None, 10, 'test', 'digits', 360, 8, (0.0,), (1.0,), True),
    'cifar10': _Spec('cifar10', 10, 'test', 'cifar', 5000, 32, CIFAR10_MEAN, CIFAR10_STD, True),
    'cifar100': _Spec('cifar100', 100, 'test', 'cifar', 5000, 32, CIFAR100_MEAN, CIFAR100_STD,
                      True),
    'imagenette': _Spec('imagenette/160px', 10, 'validation', 'imagenet', 947, 128,
                        IMAGENET_MEAN, IMAGENET_STD, False),
    'imagenet2012': _Spec('imagenet2012', 1000, 'validation', 'imagenet', 10_000, 224,
                          IMAGENET_MEAN, IMAGENET_STD, False, manual=True),
}
DATASETS = tuple(_SPECS)


class DatasetNotFoundError(ValueError):
  """A TFDS dataset is not prepared (as array_record files) in the data directory."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and a report need to know. `image_shape` is the network input shape,
  i.e. after `Dataset.preprocess`."""

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int
  num_validation: int
  num_test: int


# ---------------------------------------------------------------- deterministic orders


def _mix(x: np.ndarray) -> np.ndarray:
  """One splitmix64 step: a bijection of uint64 with full avalanche."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def _permutation(n: int, *key: int) -> np.ndarray:
  """A permutation of range(n) that depends only on `key`, identically on every platform and
  numpy version (sorting distinct hashes; no generator state)."""
  h = np.zeros(1, np.uint64)
  for k in key:
    h = _mix(h ^ np.uint64(k % 2**64))
  return np.argsort(_mix(np.arange(n, dtype=np.uint64) ^ h), kind='stable')


def batch_indices(num_examples: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
  """The example positions of every step of one epoch, (num_examples // batch_size, batch_size)
  int64: a permutation drawn from (seed, epoch), the remainder dropped."""
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  steps = num_examples // batch_size
  order = _permutation(num_examples, _SHUFFLE, seed, epoch)
  return order[:steps * batch_size].reshape(steps, batch_size).astype(np.int64)


# ---------------------------------------------------------------- reading


def _decode(data: bytes, size: int | None) -> np.ndarray:
  """An encoded image as uint8 RGB; with `size`, shorter side resized to `size`, centre crop."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  # TFDS images only
  image = Image.open(io.BytesIO(data))
  if size is not None:
    image.draft('RGB', (size, size))  # JPEG: decode at a reduced scale that still covers size
  image = image.convert('RGB')
  if size is not None:
    w, h = image.size
    w, h = max(size, round(w * size / min(w, h))), max(size, round(h * size / min(w, h)))
    image = image.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
  return np.asarray(image)


class _Arrays:
  """Examples held in memory."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images, self.labels = images, labels.astype(np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.images[indices], self.labels[indices]


class _Records:
  """Examples read by index from a TFDS data source, decoded on a thread pool."""

  def __init__(self, source, size: int | None, pool: concurrent.futures.Executor):
    self.source, self.size, self.pool = source, size, pool

  def __len__(self) -> int:
    return len(self.source)

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    records = self.source.__getitems__([int(i) for i in indices])
    images = list(self.pool.map(lambda r: _decode(r['image'], self.size), records))
    return np.stack(images), np.array([r['label'] for r in records], np.int32)

  def load_all(self, chunk: int = 2048) -> _Arrays:
    parts = [self.read(np.arange(i, min(i + chunk, len(self)))) for i in range(0, len(self), chunk)]
    return _Arrays(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


class _RawBytes(tfds.decode.Decoder):
  """Leaves the encoded image bytes to `_decode` (JPEG draft mode, fixed size, our threads)."""

  def decode_example(self, serialized_example):
    return serialized_example

  def decode_example_np(self, serialized_example):
    return serialized_example


def _default_data_dir() -> str:
  return os.environ.get('TFDS_DATA_DIR') or tfds.core.constants.DATA_DIR


def _open(name: str, spec: _Spec, split: str, data_dir: str):
  """A TFDS random-access source, or a DatasetNotFoundError that says how to prepare it."""
  try:
    return tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir, download=False,
                            decoders={'image': _RawBytes()})
  except (NotImplementedError, ValueError, FileNotFoundError) as e:
    build = f'tfds build {spec.tfds_name} --data_dir={data_dir} --file_format=array_record'
    manual = (f'ImageNet cannot be downloaded automatically: place ILSVRC2012_img_train.tar and '
              f'ILSVRC2012_img_val.tar in {os.path.join(data_dir, "downloads", "manual")}/, '
              f'then run\n  {build}' if spec.manual else f'Prepare it once with\n  {build}')
    raise DatasetNotFoundError(
        f"Dataset '{name}' (TFDS '{spec.tfds_name}', split '{split}') is not prepared as "
        f'random-access array_record files in data_dir={data_dir}. {manual}\n(A copy built '
        f'without --file_format=array_record cannot be read by index: rebuild it.)') from e


def _digits() -> _Arrays:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top  # slow import
  digits = load_digits()
  return _Arrays((digits.images[..., None] / 16.0).astype(np.float32), digits.target)


# ---------------------------------------------------------------- splits and datasets


class Split:
  """One split: examples at positions 0..num_examples-1, gathered into batches on the host."""

  def __init__(self, name: str, source: _Arrays | _Records, indices: np.ndarray):
    self.name = name
    self._source = source
    self.source_indices = indices  # where each example sits in its TFDS split (or load_digits)

  @property
  def num_examples(self) -> int:
    return len(self.source_indices)

  def __len__(self) -> int:
    return self.num_examples

  def num_batches(self, batch_size: int) -> int:
    """Training batches per epoch (remainder dropped)."""
    return self.num_examples // batch_size

  def batch_indices(self, batch_size: int, *, seed: int, epoch: int) -> np.ndarray:
    """`batch_indices(self.num_examples, batch_size, seed, epoch)`."""
    return batch_indices(self.num_examples, batch_size, seed, epoch)

  def gather(self, positions: np.ndarray | Sequence[int]) -> Batch:
    """The examples at `positions`: {'image': uint8 (float32 for digits), 'label': int32}."""
    images, labels = self._source.read(self.source_indices[np.asarray(positions, np.int64)])
    return {'image': images, 'label': labels}

  def batches(self, batch_size: int, *, seed: int = 0, epoch: int = 0,
              start_step: int = 0) -> Iterator[Batch]:
    """One shuffled epoch from `start_step` on; the next batch is read in the background."""
    rows = self.batch_indices(batch_size, seed=seed, epoch=epoch)
    return _prefetch(self.gather, rows[start_step:])

  def eval_batches(self, batch_size: int) -> Iterator[Batch]:
    """Every example once, in order; the last batch is padded and 'mask' marks real examples."""
    positions = np.arange(math.ceil(self.num_examples / batch_size) * batch_size)
    mask = positions < self.num_examples
    rows = np.where(mask, positions, 0).reshape(-1, batch_size)
    for batch, m in zip(_prefetch(self.gather, rows), mask.reshape(-1, batch_size)):
      yield {**batch, 'mask': m}

  def __repr__(self) -> str:
    return f'Split({self.name!r}, num_examples={self.num_examples})'


def _prefetch(gather: Callable[[np.ndarray], Batch], rows: np.ndarray) -> Iterator[Batch]:
  with concurrent.futures.ThreadPoolExecutor(1) as executor:
    pending = None
    for row in rows:
      ahead = executor.submit(gather, row)
      if pending is not None:
        yield pending.result()
      pending = ahead
    if pending is not None:
      yield pending.result()


@dataclasses.dataclass(frozen=True, repr=False)
class Dataset:
  """A loaded dataset: `info`, the three splits, and its device-side `preprocess`."""

  info: DatasetInfo
  train: Split
  validation: Split
  test: Split
  _spec: _Spec

  def preprocess(self, images: jax.Array, *, key: jax.Array | None = None, train: bool = False,
                 crop_fraction: float = _RESIZE_RATIO, crop_min_scale: float = 0.08,
                 randaugment: tuple[int, float] | None = None) -> jax.Array:
    """Host batch -> normalized float32 network input of shape (B, *info.image_shape). Jittable.

    train=True augments (needs `key`): CIFAR pad 4 (zeros) + random crop + flip; ImageNet-like
    random resized crop (smallest area fraction `crop_min_scale`) + flip; digits none; then,
    with randaugment=(layers, magnitude) and layers > 0, RandAugment
    (`augment.rand_augment`; not for digits). Evaluation: ImageNet-like centre crop
    covering `crop_fraction` of the stored side (0.875; the ViT recipe uses 0.95)."""
    kind, size = self._spec.kind, self.info.image_shape[0]
    x = _to_unit_float(images)
    if train and kind != 'digits':
      if key is None:
        raise ValueError('preprocess(train=True) needs a PRNG key')
      crop_key, flip_key = jax.random.split(key)
      if kind == 'cifar':
        x = pad_crop_flip(crop_key, x)
      else:
        x = random_flip(flip_key, random_resized_crop(crop_key, x, size=size,
                                                      scale=(float(crop_min_scale), 1.0)))
      if randaugment is not None and randaugment[0] > 0:
        x = augment.rand_augment(jax.random.fold_in(key, 2), x, num_layers=int(randaugment[0]),
                                 magnitude=float(randaugment[1]))
    elif kind == 'imagenet':
      x = center_crop(x, size=size, crop_fraction=crop_fraction)
    return normalize(x, self._spec.mean, self._spec.std)

  def __repr__(self) -> str:
    return f'Dataset({self.info})'


def _validation_count(validation_size: int | float, pool: int) -> int:
  count = validation_size
  if isinstance(validation_size, float):
    if not 0.0 <= validation_size < 1.0:
      raise ValueError(f'a fractional validation_size must be in [0, 1), got {validation_size}')
    count = round(validation_size * pool)
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 0 <= count < pool:
    raise ValueError(f'validation_size must be a count in [0, {pool}) or a fraction, '
                     f'got {validation_size!r}')
  return int(count)


def _spec_and_size(name: str, image_size: int | None) -> tuple[_Spec, int]:
  """The spec of dataset `name` and its network input side, or a ValueError saying what is
  wrong with the arguments."""
  if name not in _SPECS:
    raise ValueError(f'unknown dataset {name!r}; choose one of {DATASETS}')
  spec = _SPECS[name]
  if image_size is not None and spec.kind != 'imagenet':
    raise ValueError(f'{name} has a fixed image size; image_size applies to ImageNet-like data')
  return spec, image_size or spec.image_size


def load(name: str = 'digits', *, data_dir: str | os.PathLike | None = None,
         validation_size: int | float | None = None, seed: int = 0,
         image_size: int | None = None, in_memory: bool | None = None,
         num_threads: int | None = None) -> Dataset:
  """Loads a dataset (one of DATASETS) with a validation split carved from train by `seed`.

  Args:
    name: 'digits' (default, offline), 'cifar10', 'cifar100', 'imagenette', 'imagenet2012'.
    data_dir: TFDS data directory; None: $TFDS_DATA_DIR or ~/tensorflow_datasets.
    validation_size: examples carved from train, a count or a fraction; None: the dataset's
      default (digits 360, CIFAR 5000, Imagenette 947, ImageNet 10000).
    seed: decides which training examples form the validation split. Digits ignore it: their
      split is fixed.
    image_size: network input side of ImageNet-like datasets (default 128 Imagenette,
      224 ImageNet); must stay None for the others.
    in_memory: read everything into numpy arrays now (default: digits and CIFAR only).
    num_threads: host decoding threads (default: min(16, cpu count)).
  """
  spec, size = _spec_and_size(name, image_size)
  if spec.tfds_name is None:
    train_source = test_source = _digits()
    order = _permutation(len(train_source), _DIGITS_SEED)
    test_indices, pool = np.sort(order[:360]), np.sort(order[360:])
    carve_seed = _DIGITS_SEED
  else:
    data_dir = os.fspath(data_dir) if data_dir is not None else _default_data_dir()
    executor = concurrent.futures.ThreadPoolExecutor(num_threads or min(16, os.cpu_count() or 1))
    stored = round(size / _RESIZE_RATIO) if spec.kind == 'imagenet' else None
    train_source, test_source = (
        _Records(_open(name, spec, split, data_dir), stored, executor)
        for split in ('train', spec.test_split))
    if spec.in_memory if in_memory is None else in_memory:
      train_source, test_source = train_source.load_all(), test_source.load_all()
    pool, test_indices = np.arange(len(train_source)), np.arange(len(test_source))
    carve_seed = seed
  count = _validation_count(spec.validation_size if validation_size is None else validation_size,
                            len(pool))
  carve = _permutation(len(pool), _CARVE, carve_seed)
  train = Split('train', train_source, np.sort(pool[carve[count:]]))
  validation = Split('validation', train_source, np.sort(pool[carve[:count]]))
  test = Split('test', test_source, test_indices)
  channels = 1 if spec.kind == 'digits' else 3
  info = DatasetInfo(name, spec.num_classes, (size, size, channels), len(train), len(validation),
                     len(test))
  return Dataset(info, train, validation, test, spec)


def synthetic(name: str = 'imagenet2012', *, num_train: int = 512, num_validation: int = 64,
              num_test: int = 64, image_size: int | None = None, seed: int = 0) -> Dataset:
  """Random uint8 images and labels shaped like dataset `name` (in memory, nothing to
  download): for benchmarks of speed and memory, and for trying a config without its data.
  ImageNet-like images are stored at image_size / 0.875, as `load` stores them."""
  spec, size = _spec_and_size(name, image_size)
  stored = round(size / _RESIZE_RATIO) if spec.kind == 'imagenet' else size
  channels = 1 if spec.kind == 'digits' else 3
  rng = np.random.default_rng(seed)
  total = num_train + num_validation + num_test
  source = _Arrays(rng.integers(0, 256, (total, stored, stored, channels), np.uint8),
                   rng.integers(0, spec.num_classes, total))
  if spec.kind == 'digits':  # digits are float images in [0, 1]
    source = _Arrays(source.images.astype(np.float32) / 255.0, source.labels)
  bounds = np.cumsum([0, num_train, num_validation, num_test])
  splits = [Split(split, source, np.arange(bounds[i], bounds[i + 1]))
            for i, split in enumerate(('train', 'validation', 'test'))]
  info = DatasetInfo(name, spec.num_classes, (size, size, channels), num_train, num_validation,
                     num_test)
  return Dataset(info, *splits, spec)


# ---------------------------------------------------------------- device-side transforms
# Jitted with their shape arguments static, so eager calls (Colab) are fast too; inside a
# jitted training step they are simply inlined.


def _to_unit_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]; float images are taken to be in [0, 1] already."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """(x - mean) / std per channel, in float32; uint8 images are first scaled to [0, 1]."""
  return (_to_unit_float(images) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _per_example(fn: Callable, key: jax.Array, images: jax.Array) -> jax.Array:
  return jax.vmap(fn)(jax.random.split(key, images.shape[0]), images)


@jax.jit
def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2. (B, H, W, C), dtype kept."""
  def one(k, image):
    return jnp.where(jax.random.bernoulli(k), image[:, ::-1], image)
  return _per_example(one, key, images)


@functools.partial(jax.jit, static_argnames=('padding', 'mode'))
def pad_crop_flip(key: jax.Array, images: jax.Array, *, padding: int = 4,
                  mode: str = 'constant') -> jax.Array:
  """CIFAR augmentation: pad each side by `padding` (zeros; mode='reflect' mirrors instead),
  take a random crop of the original size, mirror with probability 1/2. Shape, dtype kept."""
  height, width, channels = images.shape[1:]

  def one(k, image):
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode=mode)
    u = jax.random.uniform(k, (3,))  # one draw per example: offsets and flip
    y, x = augment.uniform_int(u[0], 2 * padding + 1), augment.uniform_int(u[1], 2 * padding + 1)
    crop = jax.lax.dynamic_slice(padded, (y, x, 0), (height, width, channels))
    return jnp.where(u[2] < 0.5, crop[:, ::-1], crop)
  return _per_example(one, key, images)


def _resample_weights(in_size: int, out_size: int, start: jax.Array,
                      length: jax.Array) -> jax.Array:
  """(out_size, in_size) weights resizing pixels [start, start + length) of a row to out_size
  pixels: triangle (bilinear) kernel, widened when shrinking (antialiasing), pixels outside
  the box excluded, rows summing to 1 (as jax.image.resize does on the cropped row). As
  matrices, crop-and-resize is two small matmuls, and compiles quickly."""
  step = length / out_size
  centres = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * step
  pixels = jnp.arange(in_size, dtype=jnp.float32)
  distance = jnp.abs(pixels[None, :] + 0.5 - centres[:, None])
  inside = (pixels >= start) & (pixels < start + length)
  weights = jnp.where(inside, jnp.maximum(0.0, 1.0 - distance / jnp.maximum(step, 1.0)), 0.0)
  return weights / jnp.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


def _crop_resize(image: jax.Array, box: tuple, size: int) -> jax.Array:
  """The box (top, left, height, width) of one (H, W, C) image resized to (size, size, C)."""
  top, left, h, w = (jnp.asarray(v, jnp.float32) for v in box)
  rows = _resample_weights(image.shape[0], size, top, h)
  cols = _resample_weights(image.shape[1], size, left, w)
  return jnp.einsum('oh,hwc,pw->opc', rows, image.astype(jnp.float32), cols,
                    precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=('size', 'scale', 'ratio', 'attempts'))
def random_resized_crop(key: jax.Array, images: jax.Array, *, size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        attempts: int = 10) -> jax.Array:
  """Inception-style crop: a box of area fraction ~U(scale) and aspect ratio log-uniform in
  `ratio` (first of `attempts` draws that fits, else the whole image), resized (bilinear,
  antialiased) to size x size. Returns float32 (B, size, size, C) in the input's value range.
  `scale` and `ratio` must be tuples (static arguments)."""
  height, width = images.shape[1:3]

  def one(k, image):
    u = jax.random.uniform(k, (2 * attempts + 2,))  # one draw per example (compiles faster)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:attempts])
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = jnp.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[attempts:2 * attempts])
    w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
    first = jnp.argmax(fits)
    h = jnp.where(fits.any(), h[first], height)
    w = jnp.where(fits.any(), w[first], width)
    y, x = augment.uniform_int(u[-2], height - h + 1), augment.uniform_int(u[-1], width - w + 1)
    return _crop_resize(image, (y, x, h, w), size)
  return _per_example(one, key, images)


@functools.partial(jax.jit, static_argnames=('size', 'crop_fraction'))
def center_crop(images: jax.Array, *, size: int, crop_fraction: float = _RESIZE_RATIO) -> jax.Array:
  """The central square covering `crop_fraction` of the shorter side, resized to size x size
  (bilinear, antialiased). float32."""
  height, width = images.shape[1:3]
  side = round(crop_fraction * min(height, width))
  box = ((height - side) // 2, (width - side) // 2, side, side)
  return jax.vmap(lambda image: _crop_resize(image, box, size))(jnp.asarray(images))
