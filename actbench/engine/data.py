"""Classification data for population training: same batches for every member, resumable.

Every member of a population trains on the same batches, and a killed run must resume with
bit-identical batches, so a batch is a pure function of (seed, epoch, step): `batch_indices`
draws each epoch's permutation from a counter-based hash (numpy-version independent) and
`Split.gather` reads those examples. The host only reads and decodes (and resizes ImageNet-like
images to one fixed size); augmentation and normalization are pure, jittable JAX functions
that run on the device with one PRNG key per example.

    from actbench.engine import data
    ds = data.load('cifar10', validation_size=5000, seed=0)    # or 'digits': offline
    ds = data.from_arrays(train=(x, y), test=(x_test, y_test))   # your own arrays
    folds = data.cross_validation_folds(ds, 5)                  # every example validates once
    for batch in ds.train.batches(128, seed=0, epoch=3, start_step=17):
      x = ds.preprocess(batch['image'], key=key, train=True)   # (128, 32, 32, 3) float32

Datasets by name (`load`): `digits` (scikit-learn's 8x8 digits, bundled, fixed 1077/360/360
split); `cifar10`, `cifar100` (held in memory as uint8) and `imagenette` (160px variant,
read lazily by index), prepared by `python -m actbench.prepare NAME` or automatically on first
use, without TensorFlow; `imagenet2012` (TFDS array_record, built by hand); `npz:PATH` (arrays
x_train, y_train and optionally x_validation, y_validation, x_test, y_test); `tfds:NAME` (any
TFDS image-classification dataset prepared as array_record); `synthetic:NAME` (random examples
shaped like built-in dataset NAME, as many, made when read: a config tried without its data).
ImageNet-like images are decoded, their shorter side resized to image_size / 0.875 and
centre-cropped to a square, so batches stack. The validation split is carved from the training
split by `seed` unless given; test accuracy uses the official test split, or the official
validation split where there is no test split (Imagenette, ImageNet). `max_examples` keeps a
few examples of each split, for a quick run on a large dataset. Cross-validation pools train
and a carved validation split only: a validation split the user gave is never trained on.

Inputs may be images (H, W, C) or vectors (d,): the method's scope is classification (integer
labels, softmax outputs), since the Fisher features use the softmax predictive distribution.
`synthetic(name)` holds random images shaped like a dataset's, for speed benchmarks. Sources
decode on threads of their own, started on first read and ended by `Dataset.close()` (or
`with data.load(...) as ds:`) or when the dataset is garbage collected.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import difflib
import functools
import hashlib
import math
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np

from actbench import errors
from actbench.engine import augment, prepare, sources
from actbench.engine.transforms import (RESIZE_RATIO, center_crop, normalize, pad_crop_flip,
                                        random_flip, random_resized_crop, to_unit_float)
from actbench.engine.sources import DatasetNotFoundError

Batch = dict[str, np.ndarray]  # 'image': (B, H, W, C), 'label': (B,) int32 [, 'mask': (B,) bool]

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_DIGITS_SEED = 20_231_210  # fixes the digits split, whatever the user's seed
# Hash domains: validation carving, epoch shuffling, folds, max_examples.
_CARVE, _SHUFFLE, _FOLDS, _CAP = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How a host batch becomes network inputs on the device (`Dataset.preprocess`)."""

  augmentation: str = 'none'  # none | cifar (pad 4, crop, flip) | imagenet (random resized crop)
  mean: tuple[float, ...] = (0.0,)  # per channel, subtracted after scaling uint8 to [0, 1]
  std: tuple[float, ...] = (1.0,)


AUGMENTATIONS = ('none', 'cifar', 'imagenet')


@dataclasses.dataclass(frozen=True)
class _Spec:
  tfds_name: str | None  # None: built in
  num_classes: int
  test_split: str  # the TFDS split reported as test
  preprocessing: Preprocessing
  validation_size: int  # default count carved from train
  image_size: int  # default network input side
  in_memory: bool  # default
  sizes: tuple[int, int]  # examples of train (validation carved from it) and test
  manual: bool = False  # source files must be downloaded by hand


_CIFAR10 = Preprocessing('cifar', CIFAR10_MEAN, CIFAR10_STD)
_CIFAR100 = Preprocessing('cifar', CIFAR100_MEAN, CIFAR100_STD)
_IMAGENET = Preprocessing('imagenet', IMAGENET_MEAN, IMAGENET_STD)
_SPECS = {
    'digits': _Spec(None, 10, 'test', Preprocessing(), 360, 8, True, (1437, 360)),
    'cifar10': _Spec('cifar10', 10, 'test', _CIFAR10, 5000, 32, True, (50_000, 10_000)),
    'cifar100': _Spec('cifar100', 100, 'test', _CIFAR100, 5000, 32, True, (50_000, 10_000)),
    'imagenette': _Spec('imagenette/160px', 10, 'validation', _IMAGENET, 947, 128, False,
                        (9469, 3925)),
    'imagenet2012': _Spec('imagenet2012', 1000, 'validation', _IMAGENET, 10_000, 224, False,
                          (1_281_167, 50_000), manual=True),
}
DATASETS = tuple(_SPECS)
# Names of other data: 'npz:PATH' and 'tfds:NAME' (yours), 'synthetic:NAME' (random examples
# shaped like built-in dataset NAME, at its size).
PREFIXES = ('npz:', 'tfds:', 'synthetic:')


class DataError(errors.InputError, ValueError):
  """The data asked for cannot be used: the message says what is wrong and where (the split,
  the argument)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and a report need to know. `input_shape` is the network input shape of one
  example, i.e. after `Dataset.preprocess`: (H, W, C) images or (d,) vectors."""

  name: str
  num_classes: int
  input_shape: tuple[int, ...]
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


# ---------------------------------------------------------------- splits and datasets


class Split:
  """One split: examples at positions 0..num_examples-1, gathered into batches on the host.

  `carved`: the split was carved from the training examples (a validation split drawn by
  `seed`, a fold), not given apart by the user; only such a validation split may be pooled
  back into train by cross-validation."""

  def __init__(self, name: str, source, indices: np.ndarray, *, carved: bool = False):
    self.name = name
    self._source = source
    self.source_indices = np.asarray(indices, np.int64)  # where each example sits in its source
    self.carved = carved

  @property
  def source(self):
    """Where the examples are read from (shared by splits carved from one another)."""
    return self._source

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
    """The examples at `positions`: {'image': uint8 or float32 inputs, 'label': int32}."""
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

  def identity(self) -> str:
    """What this split is: its source and which of the source's examples it holds."""
    positions = hashlib.sha256(np.ascontiguousarray(self.source_indices).tobytes()).hexdigest()
    return f'{self._source.identity}[{positions[:16]}]'

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
  preprocessing: Preprocessing = Preprocessing()

  @functools.cached_property
  def fingerprint(self) -> str:
    """A digest of what the data are (each split's examples and the preprocessing): a search
    store refuses results computed on different data."""
    parts = [repr(self.info.num_classes), repr(self.info.input_shape), repr(self.preprocessing)]
    parts += [split.identity() for split in (self.train, self.validation, self.test)]
    return hashlib.sha256('\n'.join(parts).encode()).hexdigest()[:16]

  def preprocess(self, images: jax.Array, *, key: jax.Array | None = None, train: bool = False,
                 crop_fraction: float = RESIZE_RATIO, crop_min_scale: float = 0.08,
                 randaugment: tuple[int, float] | None = None) -> jax.Array:
    """Host batch -> normalized float32 network input of shape (B, *info.input_shape). Jittable.

    train=True augments (needs `key`) as `preprocessing.augmentation` says: CIFAR pad 4
    (zeros) + random crop + flip; ImageNet-like random resized crop (smallest area fraction
    `crop_min_scale`) + flip; none for digits and your own data; then, with
    randaugment=(layers, magnitude) and layers > 0, RandAugment (`augment.rand_augment`).
    Evaluation: ImageNet-like centre crop covering `crop_fraction` of the stored side (0.875;
    the ViT recipe uses 0.95)."""
    kind = self.preprocessing.augmentation
    x = to_unit_float(images)
    if train and kind != 'none':
      if key is None:
        raise ValueError('preprocess(train=True) needs a PRNG key')
      crop_key, flip_key = jax.random.split(key)
      if kind == 'cifar':
        x = pad_crop_flip(crop_key, x)
      else:
        x = random_flip(flip_key, random_resized_crop(crop_key, x, size=self.info.input_shape[0],
                                                      scale=(float(crop_min_scale), 1.0)))
      if randaugment is not None and randaugment[0] > 0:
        x = augment.rand_augment(jax.random.fold_in(key, 2), x, num_layers=int(randaugment[0]),
                                 magnitude=float(randaugment[1]))
    elif kind == 'imagenet':
      x = center_crop(x, size=self.info.input_shape[0], crop_fraction=crop_fraction)
    return normalize(x, self.preprocessing.mean, self.preprocessing.std)

  def close(self) -> None:
    """Ends the threads the splits' sources decode on; the dataset can still be read (they
    start again). `with data.load(...) as dataset:` closes it on leaving."""
    splits = (self.train, self.validation, self.test)
    for source in {id(split.source): split.source for split in splits}.values():
      source.close()

  def __enter__(self) -> Dataset:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __repr__(self) -> str:
    return f'Dataset({self.info})'


def _validation_count(validation_size: int | float, pool: int) -> int:
  count = validation_size
  if isinstance(validation_size, float):
    if not 0.0 <= validation_size < 1.0:
      raise DataError(f'a fractional validation_size must be in [0, 1), got {validation_size}')
    count = round(validation_size * pool)
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 0 <= count < pool:
    raise DataError(f'validation_size must be a count in [0, {pool}) or a fraction, '
                    f'got {validation_size!r}')
  return int(count)


def _carve(source, pool: np.ndarray, validation_size, seed: int) -> tuple[Split, Split]:
  """(train, validation): `validation_size` of the examples at `pool`, chosen by `seed`."""
  count = _validation_count(validation_size, len(pool))
  carve = _permutation(len(pool), _CARVE, seed)
  return (Split('train', source, np.sort(pool[carve[count:]])),
          Split('validation', source, np.sort(pool[carve[:count]]), carved=True))


def cross_validation_folds(dataset: Dataset, num_folds: int, *, seed: int = 0) -> list[Dataset]:
  """`num_folds` datasets whose validation splits partition the examples of `dataset`'s train
  and validation splits (every example validates exactly once; fold sizes differ by at most
  one), each training on the rest; the test split is shared. Which example goes to which fold
  depends only on `seed`.

  Only a validation split carved from train is pooled (every built-in and TFDS dataset's, and
  your own data's without validation arrays): a validation split you gave (`from_arrays(
  validation=...)`, x_validation in an .npz) raises DataError rather than being trained on.
  Put those examples into train to cross-validate over them, or validate on them without
  folds."""
  if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)) or num_folds < 2:
    raise DataError(f'cross-validation needs at least 2 folds, got {num_folds!r}')
  train, validation = dataset.train, dataset.validation
  if not validation.carved:
    raise DataError(
        f'{dataset.info.name}: cross-validation would train on the validation split you gave '
        '(validation arrays, or x_validation in an .npz file). To cross-validate over those '
        'examples, give them as part of train (the folds carve every validation split); to '
        'validate on them as given, do not cross-validate (config.dataset.folds = 0)')
  if train.source is not validation.source:
    raise DataError(f'{dataset.info.name}: cross-validation pools the train and validation '
                    'splits, which here come from different sources; give your arrays as '
                    'one train split')
  pool = np.sort(np.concatenate([train.source_indices, validation.source_indices]))
  if len(pool) < 2 * num_folds:
    raise DataError(f'{dataset.info.name}: {len(pool)} examples are too few for {num_folds} '
                    'folds')
  fold_of = np.empty(len(pool), np.int64)
  fold_of[_permutation(len(pool), _FOLDS, seed)] = np.arange(len(pool)) % num_folds
  folds = []
  for fold in range(num_folds):
    fold_train = Split('train', train.source, pool[fold_of != fold])
    fold_validation = Split('validation', train.source, pool[fold_of == fold], carved=True)
    info = dataclasses.replace(dataset.info, num_train=len(fold_train),
                               num_validation=len(fold_validation))
    folds.append(Dataset(info, fold_train, fold_validation, dataset.test,
                         dataset.preprocessing))
  return folds


def check_name(name: str) -> None:
  """Raises DataError (a ValueError) unless `name` is a built-in dataset, 'synthetic:NAME'
  of one, 'npz:PATH' or 'tfds:NAME'."""
  name = str(name)
  if name.startswith('synthetic:'):
    _synthetic_spec(name[len('synthetic:'):])
  elif not name.startswith(PREFIXES):
    _spec_and_size(name, None)


def official_sizes(name: str) -> tuple[int, int]:
  """(training examples, test examples) of built-in dataset `name` as published (the
  validation split is carved from the training ones)."""
  return _spec_and_size(name, None)[0].sizes


def _synthetic_spec(name: str) -> _Spec:
  """The spec of built-in dataset `name` of 'synthetic:NAME', or a DataError."""
  if name not in _SPECS:
    close = difflib.get_close_matches(name, DATASETS, n=1)
    hint = f' (did you mean {"synthetic:" + close[0]!r}?)' if close else ''
    raise DataError(f"'synthetic:NAME' takes a built-in dataset NAME, one of {DATASETS}; got "
                    f'{name!r}{hint}')
  return _SPECS[name]


def _spec_and_size(name: str, image_size: int | None) -> tuple[_Spec, int]:
  """The spec of dataset `name` and its network input side, or a DataError saying what is
  wrong with the arguments."""
  if name not in _SPECS:
    close = difflib.get_close_matches(name, DATASETS, n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    raise DataError(f'unknown dataset {name!r}{hint}; choose one of {DATASETS}, '
                    "'npz:PATH' (your arrays), 'tfds:NAME' (any TFDS image classification) or "
                    "'synthetic:NAME' (random examples shaped like built-in dataset NAME)")
  spec = _SPECS[name]
  if image_size is not None and spec.preprocessing.augmentation != 'imagenet':
    raise DataError(f'{name} has a fixed image size; image_size applies to ImageNet-like data')
  return spec, image_size or spec.image_size


def load(name: str = 'digits', *, data_dir: str | os.PathLike | None = None,
         validation_size: int | float | None = None, seed: int = 0,
         image_size: int | None = None, in_memory: bool | None = None,
         num_threads: int | None = None, download: bool = True, image_key: str = 'image',
         label_key: str = 'label', max_examples: int = 0, progress: bool = True) -> Dataset:
  """Loads a dataset with a validation split carved from train by `seed`.

  Args:
    name: 'digits' (default, offline), 'cifar10', 'cifar100', 'imagenette', 'imagenet2012',
      'npz:PATH', 'tfds:NAME' or 'synthetic:NAME' (see the module docstring).
    data_dir: where prepared datasets live (actbench's under `<data_dir>/actbench/`, TFDS's as
      TFDS lays them out); None: $TFDS_DATA_DIR or ~/tensorflow_datasets.
    validation_size: examples carved from train, a count or a fraction; None: the dataset's
      default (digits 360, CIFAR 5000, Imagenette 947, ImageNet 10000, your own data 10%).
    seed: decides which training examples form the validation split (and which examples
      max_examples keeps). Digits ignore it for their split: it is fixed.
    image_size: network input side of ImageNet-like datasets (default 128 Imagenette,
      224 ImageNet; needed for 'tfds:NAME' datasets whose images vary in size).
    in_memory: read everything into numpy arrays now (default: digits and CIFAR only, and
      nothing with max_examples: only the examples kept are ever read).
    num_threads: host decoding threads (default: min(16, cpu count)).
    download: prepare cifar10, cifar100 or imagenette (download and convert) when missing;
      False raises DatasetNotFoundError instead.
    image_key, label_key: the feature names of a 'tfds:NAME' dataset.
    max_examples: keep at most this many examples of each split (0: all), drawn by `seed`
      after the validation split is carved: a quick run on a large dataset
      (`cap_examples`).
    progress: progress bars while preparing a dataset.
  """
  if not isinstance(name, str):
    raise DataError(f'a dataset name must be a string, got {name!r}')
  _check_max_examples(max_examples)
  if max_examples and in_memory is None:
    in_memory = False
  dataset = _load(name, data_dir, validation_size, seed, image_size, in_memory, num_threads,
                  download, image_key, label_key, progress)
  return cap_examples(dataset, max_examples, seed=seed)


def _load(name, data_dir, validation_size, seed, image_size, in_memory, num_threads, download,
          image_key, label_key, progress) -> Dataset:
  """`load` without max_examples."""
  if name.startswith('synthetic:'):
    return _load_synthetic(name[len('synthetic:'):], validation_size, seed, image_size)
  if name.startswith('npz:'):
    return load_npz(name[len('npz:'):], validation_size=validation_size, seed=seed)
  data_dir = os.fspath(data_dir) if data_dir is not None else prepare.default_data_dir()
  threads = num_threads or min(16, os.cpu_count() or 1)
  if name.startswith('tfds:'):
    return _load_tfds(name, data_dir, validation_size, seed, image_size, bool(in_memory),
                      threads, image_key, label_key)
  spec, size = _spec_and_size(name, image_size)
  if spec.tfds_name is None:
    train_source = test_source = sources.digits()
    order = _permutation(len(train_source), _DIGITS_SEED)
    test_indices, pool = np.sort(order[:360]), np.sort(order[360:])
    seed = _DIGITS_SEED
  else:
    stored = round(size / RESIZE_RATIO) if spec.preprocessing.augmentation == 'imagenet' else None
    train_source, test_source = _builtin_sources(name, spec, data_dir, stored, threads, download,
                                                 progress)
    if spec.in_memory if in_memory is None else in_memory:
      train_source, test_source = sources.load_all(train_source), sources.load_all(test_source)
    pool, test_indices = np.arange(len(train_source)), np.arange(len(test_source))
  default_count = spec.validation_size if validation_size is None else validation_size
  train, validation = _carve(train_source, pool, default_count, seed)
  test = Split('test', test_source, test_indices)
  channels = 1 if name == 'digits' else 3
  info = DatasetInfo(name, spec.num_classes, (size, size, channels), len(train), len(validation),
                     len(test))
  return Dataset(info, train, validation, test, spec.preprocessing)


def _tfds_sources(name, tfds_name, splits, data_dir, stored, threads, *, manual=False,
                  image_key='image', label_key='label', channels=3):
  """Sources of TFDS array_record splits, each decoded (at `stored` side, if given) on
  `threads` threads of its own."""
  opened = [sources.open_tfds(name, tfds_name, split, data_dir, image_key=image_key,
                              manual=manual) for split in splits]
  return tuple(sources.RecordSource(
      source, stored, threads, identity=sources.tfds_identity(source, tfds_name, split),
      image_key=image_key, label_key=label_key, channels=channels)
               for source, split in zip(opened, splits))


def _builtin_sources(name, spec, data_dir, stored, threads, download, progress):
  """(train, test) sources of a built-in dataset: actbench's prepared files, else a TFDS
  array_record copy, else prepared now (when `download`)."""
  splits = ('train', spec.test_split)
  if name not in prepare.PREPARABLE:
    return _tfds_sources(name, spec.tfds_name, splits, data_dir, stored, threads,
                         manual=spec.manual)
  if not prepare.is_prepared(name, data_dir):
    try:  # a copy built with `tfds build` serves as well
      return _tfds_sources(name, spec.tfds_name, splits, data_dir, stored, threads)
    except DatasetNotFoundError:
      if not download:
        raise DatasetNotFoundError(
            f"Dataset '{name}' is not prepared in data_dir={data_dir}. Prepare it once with\n"
            f'  python -m actbench.prepare {name} --data_dir={data_dir}\n(or allow it on first '
            'use: config.dataset.download = True).') from None
      prepare.prepare(name, data_dir=data_dir, progress=progress)
  return tuple(prepare.open_split(name, split, data_dir, image_size=stored, num_threads=threads)
               for split in ('train', 'test'))


def _load_synthetic(name, validation_size, seed, image_size) -> Dataset:
  """'synthetic:NAME': random examples shaped like built-in dataset NAME, as many as it has
  (made when read), the validation split as large as NAME's."""
  spec = _synthetic_spec(name)
  num_train, num_test = spec.sizes
  default_count = spec.validation_size if validation_size is None else validation_size
  count = _validation_count(default_count, num_train)
  return synthetic(name, num_train=num_train - count, num_validation=count, num_test=num_test,
                   image_size=image_size, seed=seed, in_memory=False)


def _load_tfds(name, data_dir, validation_size, seed, image_size, in_memory, threads, image_key,
               label_key) -> Dataset:
  """Any TFDS image-classification dataset prepared as array_record ('tfds:NAME'): test is its
  'test' split, else its 'validation' split; images of varying size need `image_size`."""
  tfds_name = name[len('tfds:'):]
  if not tfds_name:
    raise DataError("'tfds:' needs a dataset name, e.g. 'tfds:mnist' or 'tfds:imagenette/320px'")
  info = getattr(sources.open_tfds(name, tfds_name, 'train', data_dir, image_key=image_key),
                 'dataset_info', None)
  features = info.features if info is not None else {}
  if image_key not in features or label_key not in features:
    raise DataError(f"TFDS dataset {tfds_name!r} has no feature {image_key!r} or {label_key!r} "
                    f"(it has {sorted(features)}): set config.dataset.image_key / label_key")
  num_classes = getattr(features[label_key], 'num_classes', None)
  shape = tuple(features[image_key].shape)
  if not num_classes or len(shape) != 3:
    raise DataError(f'TFDS dataset {tfds_name!r} is not image classification: {label_key!r} is '
                    f'{features[label_key]!r} and {image_key!r} has shape {shape}')
  fixed = shape[0] is not None and shape[1] is not None
  if not fixed and not image_size:
    raise DataError(f'the images of TFDS dataset {tfds_name!r} vary in size: give an input side '
                    '(config.dataset.image_size)')
  size = image_size or shape[0]
  stored = None if fixed and not image_size else round(size / RESIZE_RATIO)
  channels = shape[2] or 3
  test_split = 'test' if 'test' in info.splits else 'validation'
  train_source, test_source = _tfds_sources(
      name, tfds_name, ('train', test_split), data_dir, stored, threads, image_key=image_key,
      label_key=label_key, channels=channels)
  if in_memory:
    train_source, test_source = sources.load_all(train_source), sources.load_all(test_source)
  train_split, validation = _carve(train_source, np.arange(len(train_source)),
                                   0.1 if validation_size is None else validation_size, seed)
  preprocessing = Preprocessing('none' if stored is None else 'imagenet')
  info = DatasetInfo(name, int(num_classes), (size, size, channels), len(train_split),
                     len(validation), len(test_source))
  return Dataset(info, train_split, validation, Split('test', test_source,
                                                      np.arange(len(test_source))),
                 preprocessing)


def _checked_arrays(split: str, pair) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, labels) of one split, or a DataError naming the split and the problem."""
  try:
    x, y = pair
  except (TypeError, ValueError):
    raise DataError(f'{split} must be a pair (inputs, labels), got {type(pair).__name__}') from None
  x, y = np.asarray(x), np.asarray(y)
  if x.ndim < 2 or x.dtype.kind not in 'uif' or x.dtype == np.bool_:
    raise DataError(f'{split} inputs must be a numeric array (examples, ...) of vectors or '
                    f'images, got dtype {x.dtype} and shape {x.shape}')
  if y.ndim != 1 or len(y) != len(x):
    raise DataError(f'{split} labels must be one integer per example: {len(x)} inputs, labels '
                    f'of shape {y.shape}')
  if len(x) == 0:
    raise DataError(f'{split} has no examples')
  if y.dtype.kind == 'f' and not np.all(np.isfinite(y) & (y == np.round(y))):
    raise DataError(f'{split} labels must be integers (class indices), got floats such as '
                    f'{y[~(np.isfinite(y) & (y == np.round(y)))][0]}')
  if y.dtype.kind not in 'uif' or (len(y) and y.min() < 0):
    raise DataError(f'{split} labels must be class indices 0, 1, ..., got {y.dtype} values '
                    f'from {y.min()}')
  if x.dtype.kind == 'f' and not np.all(np.isfinite(x)):
    bad = np.argwhere(~np.isfinite(x.reshape(len(x), -1)).all(axis=1)).ravel()
    raise DataError(f'{split} inputs hold NaN or inf (example {int(bad[0])} and '
                    f'{len(bad) - 1} more)')
  if x.dtype.kind in 'ui' and x.dtype != np.uint8:
    raise DataError(f'{split} inputs must be float (any range) or uint8 images (0..255), got '
                    f'{x.dtype}')
  return x, y.astype(np.int32)


def from_arrays(train, validation=None, test=None, *, num_classes: int | None = None,
                validation_size: int | float | None = None, seed: int = 0,
                name: str = 'arrays') -> Dataset:
  """A Dataset of your own arrays, usable everywhere a built-in one is.

  Args:
    train, validation, test: (inputs, labels) pairs. Inputs are images (N, H, W, C) or vectors
      (N, d), float (used as they are) or uint8 (scaled to [0, 1]); labels are class indices
      (N,). Without `validation`, `validation_size` of train is carved out by `seed`; a
      `validation` given is kept apart (`cross_validation_folds` refuses to train on it);
      without `test`, the test split is empty (nothing is reported for it).
    num_classes: default the largest label + 1.
    validation_size: a count or a fraction of train (default 0.1); only without `validation`.
    seed: which training examples form the validation split.
    name: how reports name the dataset.

  No augmentation: preprocess only scales uint8 inputs. Raises DataError (a ValueError) naming
  the split and the problem: mismatched lengths, non-integer or negative labels, labels not
  below num_classes, NaN or inf inputs, inputs of different shapes in different splits.
  """
  given = {'train': train, 'validation': validation, 'test': test}
  arrays = {split: _checked_arrays(split, pair) for split, pair in given.items()
            if pair is not None}
  shapes = {split: x.shape[1:] for split, (x, _) in arrays.items()}
  if len(set(shapes.values())) > 1:
    raise DataError(f'every split must have inputs of one shape, got {shapes}')
  if len({x.dtype for x, _ in arrays.values()}) > 1:
    raise DataError('every split must have inputs of one dtype, got '
                    f'{ {split: str(x.dtype) for split, (x, _) in arrays.items()} }')
  largest = max(int(y.max()) for _, y in arrays.values())
  if num_classes is None:
    num_classes = largest + 1
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or (
      num_classes < 2):
    raise DataError(f'num_classes must be an integer of at least 2, got {num_classes!r}')
  for split, (_, y) in arrays.items():
    if y.max() >= num_classes:
      raise DataError(f'{split} labels must be below num_classes={num_classes}, got '
                      f'{int(y.max())}')
  if validation is not None and validation_size is not None:
    raise DataError('give either validation arrays or a validation_size, not both')
  x = np.concatenate([x for x, _ in arrays.values()])
  y = np.concatenate([y for _, y in arrays.values()])
  source = sources.ArraySource(x, y)
  bounds = np.cumsum([0] + [len(y) for _, y in arrays.values()])
  positions = {split: np.arange(bounds[i], bounds[i + 1]) for i, split in enumerate(arrays)}
  if validation is None:
    train_split, validation_split = _carve(
        source, positions['train'], 0.1 if validation_size is None else validation_size, seed)
  else:
    train_split = Split('train', source, positions['train'])
    validation_split = Split('validation', source, positions['validation'])
  test_split = Split('test', source, positions.get('test', np.zeros(0, np.int64)))
  info = DatasetInfo(name, int(num_classes), tuple(int(d) for d in x.shape[1:]),
                     len(train_split), len(validation_split), len(test_split))
  return Dataset(info, train_split, validation_split, test_split, Preprocessing())


def _check_max_examples(max_examples) -> None:
  if isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer)) or (
      max_examples < 0):
    raise DataError(f'max_examples must be a count >= 0 (0: every example), got '
                    f'{max_examples!r}')


def cap_examples(dataset: Dataset, max_examples: int, *, seed: int = 0) -> Dataset:
  """`dataset` with each split cut to at most `max_examples` examples (0: all, `dataset`
  itself), drawn by `seed` in an order of each split's own: a split stored class by class
  (Imagenette) keeps its classes mixed. Subsets of disjoint splits stay disjoint."""
  _check_max_examples(max_examples)
  if not max_examples:
    return dataset

  def cap(split: Split, domain: int) -> Split:
    if len(split) <= max_examples:
      return split
    kept = np.sort(_permutation(len(split), _CAP, seed, domain)[:max_examples])
    return Split(split.name, split.source, split.source_indices[kept], carved=split.carved)

  train, validation, test = (cap(split, domain) for domain, split in enumerate(
      (dataset.train, dataset.validation, dataset.test)))
  info = dataclasses.replace(dataset.info, num_train=len(train), num_validation=len(validation),
                             num_test=len(test))
  return Dataset(info, train, validation, test, dataset.preprocessing)


_NPZ_SPLITS = ('train', 'validation', 'test')


def load_npz(path: str | os.PathLike, *, validation_size: int | float | None = None,
             seed: int = 0, num_classes: int | None = None) -> Dataset:
  """`from_arrays` of an .npz file with arrays x_train, y_train and optionally x_validation,
  y_validation, x_test, y_test."""
  path = os.path.expanduser(os.fspath(path))
  if not os.path.isfile(path):
    raise DataError(f"no .npz file at {path!r} (dataset 'npz:{path}')")
  try:
    with np.load(path, allow_pickle=False) as arrays:
      found = {key: arrays[key] for key in arrays.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a damaged or foreign file
    raise DataError(f'{path}: not a readable .npz file ({type(e).__name__}: {e})') from e
  expected = {f'{axis}_{split}' for axis in 'xy' for split in _NPZ_SPLITS}
  if 'x_train' not in found or 'y_train' not in found or set(found) - expected:
    raise DataError(f'{path} must hold x_train and y_train, and optionally x_validation, '
                    f'y_validation, x_test, y_test; it holds {sorted(found)}')
  pairs = {}
  for split in _NPZ_SPLITS:
    present = [f'{axis}_{split}' in found for axis in 'xy']
    if any(present) and not all(present):
      raise DataError(f'{path} has only one of x_{split} and y_{split}')
    pairs[split] = (found[f'x_{split}'], found[f'y_{split}']) if all(present) else None
  name = f'npz:{os.path.basename(path)}'
  return from_arrays(**pairs, num_classes=num_classes,
                     validation_size=None if pairs['validation'] is not None else validation_size,
                     seed=seed, name=name)


def synthetic(name: str = 'imagenet2012', *, num_train: int = 512, num_validation: int = 64,
              num_test: int = 64, image_size: int | None = None, seed: int = 0,
              in_memory: bool = True) -> Dataset:
  """Random images and labels shaped like built-in dataset `name`, with its classes and
  preprocessing (nothing to download): for benchmarks of speed and memory, and for trying a
  config without its data (`load('synthetic:NAME')`, at the dataset's size). ImageNet-like
  images are stored at image_size / 0.875, as `load` stores them; digits are float images in
  [0, 1], the others uint8. The same seed and sizes give the same examples.

  in_memory: hold the examples in arrays (reading never limits a benchmark's step); False
  makes each when read (`sources.RandomSource`), so any number of them takes no memory."""
  spec, size = _spec_and_size(name, image_size)
  stored = round(size / RESIZE_RATIO) if spec.preprocessing.augmentation == 'imagenet' else size
  channels = 1 if name == 'digits' else 3
  total = num_train + num_validation + num_test
  shape = (stored, stored, channels)
  source = sources.RandomSource(
      total, shape, spec.num_classes, seed=seed, float_images=name == 'digits',
      identity=f'synthetic:{name}:{seed}:{total}x{"x".join(map(str, shape))}')
  if in_memory:
    source = sources.load_all(source)
  bounds = np.cumsum([0, num_train, num_validation, num_test])
  # Independent random examples: a block of them is as good a validation split as one drawn
  # by a seed, so folds may pool it.
  train, validation, test = (
      Split(split, source, np.arange(bounds[i], bounds[i + 1]), carved=split == 'validation')
      for i, split in enumerate(('train', 'validation', 'test')))
  info = DatasetInfo(f'synthetic:{name}', spec.num_classes, (size, size, channels), num_train,
                     num_validation, num_test)
  return Dataset(info, train, validation, test, spec.preprocessing)
