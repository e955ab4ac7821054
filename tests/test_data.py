"""Tests for actbench.engine.data: splits, deterministic batches, device augmentation, clear errors.

TFDS data comes from the session fixture `tfds_dir` (tests/tfds_fixtures.py): tiny, real,
prepared array_record datasets, since `tfds.testing.mock_data` cannot stand in for
`tfds.data_source`.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import io
import itertools
import os
import threading

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
import tensorflow_datasets as tfds

from actbench.engine import data, sources

from tests.tfds_fixtures import (NUM_CIFAR_TEST, NUM_CIFAR_TRAIN,
                                 NUM_NETTE_VALIDATION)


@pytest.fixture(scope='module')
def digits():
  return data.load('digits')


# ---------------------------------------------------------------- digits


def test_digits_split_is_fixed_disjoint_and_covers_the_set(digits):
  info = digits.info
  assert (info.num_train, info.num_validation, info.num_test) == (1077, 360, 360)
  assert info.input_shape == (8, 8, 1) and info.num_classes == 10
  parts = [digits.train.source_indices, digits.validation.source_indices,
           digits.test.source_indices]
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(1797))
  other = data.load('digits', seed=123)  # the user's seed must not move the split
  for mine, theirs in zip(parts, [other.train, other.validation, other.test]):
    np.testing.assert_array_equal(mine, theirs.source_indices)


def test_cross_validation_folds_partition_the_non_test_examples(digits):
  folds = data.cross_validation_folds(digits, 5, seed=3)
  pool = np.sort(np.concatenate([digits.train.source_indices,
                                 digits.validation.source_indices]))
  validations = [fold.validation.source_indices for fold in folds]
  # Every non-test example validates exactly once; each fold trains on all the others.
  np.testing.assert_array_equal(np.sort(np.concatenate(validations)), pool)
  assert sorted(len(v) for v in validations) == [287, 287, 287, 288, 288]
  for fold, validation in zip(folds, validations):
    np.testing.assert_array_equal(
        np.sort(np.concatenate([fold.train.source_indices, validation])), pool)
    assert not np.intersect1d(fold.train.source_indices, validation).size
    np.testing.assert_array_equal(fold.test.source_indices, digits.test.source_indices)
    assert (fold.info.num_train, fold.info.num_validation) == (1437 - len(validation),
                                                               len(validation))
    batch = fold.validation.gather([0])
    expected = digits.train.source.read(validation[:1])
    np.testing.assert_array_equal(batch['image'], expected[0])
  # The seed alone decides the folds.
  again = data.cross_validation_folds(digits, 5, seed=3)
  other = data.cross_validation_folds(digits, 5, seed=4)
  for a, b in zip(folds, again):
    np.testing.assert_array_equal(a.validation.source_indices, b.validation.source_indices)
    assert a.fingerprint == b.fingerprint
  assert any(len(np.setxor1d(a.validation.source_indices, c.validation.source_indices))
             for a, c in zip(folds, other))
  assert len({fold.fingerprint for fold in folds}) == 5  # checkpoints and stores tell them apart


def test_digits_folds_stay_those_of_the_shipped_table(digits):
  # configs/digits_bench.py built act-bench-digits.json on these 5 folds (config.seed 0): a
  # fold that moved would be other data, and its store would refuse the table's results.
  folds = data.cross_validation_folds(digits, 5, seed=0)
  assert [fold.fingerprint for fold in folds] == [
      '7655048e3f83d614', '97639e279cc2c82c', 'bea7f7604ec91903', '67bd5e05767948a1',
      '07e41aa72be37be1']


def test_cross_validation_refuses_a_validation_split_the_user_gave():
  x, y = np.arange(40, dtype=np.float32)[:, None], np.arange(40) % 2
  given = data.from_arrays((x[:30], y[:30]), validation=(x[30:], y[30:]))
  with pytest.raises(data.DataError) as error:
    data.cross_validation_folds(given, 3)
  message = str(error.value)
  assert message.startswith('arrays: ') and 'validation split you gave' in message
  assert 'as part of train' in message and 'config.dataset.folds = 0' in message
  # The same examples given as train: the folds carve every validation split from all 40.
  pooled = data.from_arrays((x, y), validation_size=10)
  folds = data.cross_validation_folds(pooled, 3)
  validated = np.concatenate([f.validation.gather(np.arange(len(f.validation)))['image']
                              for f in folds])
  np.testing.assert_array_equal(np.sort(validated.ravel()), x.ravel())
  assert all(f.validation.carved for f in folds)


def test_cross_validation_needs_one_pool_and_two_folds():
  x, y = np.zeros((40, 3), np.float32), np.arange(40) % 2
  carved = data.from_arrays((x[:30], y[:30]), validation_size=10)
  apart = dataclasses.replace(carved, validation=data.Split(
      'validation', sources.ArraySource(x[30:], y[30:]), np.arange(10), carved=True))
  with pytest.raises(data.DataError, match='different sources'):
    data.cross_validation_folds(apart, 3)
  pooled = data.from_arrays((x, y))
  with pytest.raises(data.DataError, match='at least 2 folds'):
    data.cross_validation_folds(pooled, 1)
  with pytest.raises(data.DataError, match='too few'):
    data.cross_validation_folds(pooled, 30)
  assert len(data.cross_validation_folds(pooled, 4)) == 4


def test_digits_values_match_sklearn(digits):
  reference = load_digits()
  batch = digits.test.gather(np.arange(digits.test.num_examples))
  assert batch['image'].dtype == np.float32 and batch['image'].shape == (360, 8, 8, 1)
  assert batch['image'].min() == 0.0 and batch['image'].max() == 1.0
  np.testing.assert_array_equal(batch['label'], reference.target[digits.test.source_indices])
  np.testing.assert_allclose(batch['image'][..., 0],
                             reference.images[digits.test.source_indices] / 16.0)


def test_digits_preprocess_is_identity_without_augmentation(digits):
  images = digits.train.gather([0, 1, 2])['image']
  out = digits.preprocess(images, key=jax.random.key(0), train=True)
  np.testing.assert_array_equal(np.asarray(out), images)


# ---------------------------------------------------------------- batch order


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(n=st.integers(0, 300), batch_size=st.integers(1, 64),
                  seed=st.integers(-2**40, 2**40), epoch=st.integers(0, 10_000))
def test_batch_indices_is_a_deterministic_permutation_prefix(n, batch_size, seed, epoch):
  rows = data.batch_indices(n, batch_size, seed, epoch)
  assert rows.shape == (n // batch_size, batch_size) and rows.dtype == np.int64
  flat = rows.ravel()
  assert len(np.unique(flat)) == flat.size and (flat.size == 0 or 0 <= flat.min() <= flat.max() < n)
  np.testing.assert_array_equal(rows, data.batch_indices(n, batch_size, seed, epoch))


def test_batch_indices_differ_across_epochs_and_seeds():
  base = data.batch_indices(1000, 100, seed=7, epoch=0)
  assert not np.array_equal(base, data.batch_indices(1000, 100, seed=7, epoch=1))
  assert not np.array_equal(base, data.batch_indices(1000, 100, seed=8, epoch=0))
  # Dropping the remainder only shortens the epoch: same leading order for any batch size.
  np.testing.assert_array_equal(data.batch_indices(1000, 300, 7, 0).ravel(), base.ravel()[:900])
  with pytest.raises(ValueError):
    data.batch_indices(10, 0, 0, 0)


def test_batches_resume_mid_epoch_bit_identically(digits):
  full = list(digits.train.batches(100, seed=3, epoch=2))
  assert len(full) == digits.train.num_batches(100) == 10
  resumed = list(digits.train.batches(100, seed=3, epoch=2, start_step=7))
  assert len(resumed) == 3
  for a, b in zip(full[7:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  rows = digits.train.batch_indices(100, seed=3, epoch=2)
  np.testing.assert_array_equal(full[4]['label'], digits.train.gather(rows[4])['label'])
  other_epoch = next(digits.train.batches(100, seed=3, epoch=3))
  assert not np.array_equal(full[0]['image'], other_epoch['image'])


def test_eval_batches_cover_every_example_once_with_a_mask(digits):
  batches = list(digits.test.eval_batches(128))
  assert [len(b['label']) for b in batches] == [128, 128, 128]
  mask = np.concatenate([b['mask'] for b in batches])
  assert mask.sum() == 360 and mask[:360].all()
  labels = np.concatenate([b['label'] for b in batches])[mask]
  np.testing.assert_array_equal(labels, digits.test.gather(np.arange(360))['label'])


# ---------------------------------------------------------------- TFDS datasets


def test_cifar_validation_carving_is_deterministic_and_disjoint(tfds_dir):
  a = data.load('cifar10', data_dir=tfds_dir, validation_size=10, seed=0)
  assert (a.info.num_train, a.info.num_validation, a.info.num_test) == (30, 10, NUM_CIFAR_TEST)
  assert a.info.input_shape == (32, 32, 3) and a.info.num_classes == 10
  train, validation = a.train.source_indices, a.validation.source_indices
  assert not set(train) & set(validation)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, validation])),
                                np.arange(NUM_CIFAR_TRAIN))
  again = data.load('cifar10', data_dir=tfds_dir, validation_size=0.25, seed=0)
  np.testing.assert_array_equal(again.validation.source_indices, validation)
  other = data.load('cifar10', data_dir=tfds_dir, validation_size=10, seed=1)
  assert not np.array_equal(other.validation.source_indices, validation)


def test_cifar_in_memory_pixels_match_tfds(tfds_dir):
  ds = data.load('cifar10', data_dir=tfds_dir, validation_size=10)
  reference = tfds.data_source('cifar10', split='train', data_dir=tfds_dir, download=False)
  batch = ds.validation.gather([3, 0])
  assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32
  for image, label, index in zip(batch['image'], batch['label'],
                                 ds.validation.source_indices[[3, 0]]):
    np.testing.assert_array_equal(image, reference[int(index)]['image'])
    assert label == reference[int(index)]['label']


def test_cifar_preprocess(tfds_dir):
  ds = data.load('cifar10', data_dir=tfds_dir, validation_size=10)
  images = ds.train.gather(np.arange(8))['image']
  evaluated = ds.preprocess(images)
  np.testing.assert_allclose(evaluated, data.normalize(images, data.CIFAR10_MEAN,
                                                       data.CIFAR10_STD), rtol=1e-6)
  train = jax.jit(lambda x, k: ds.preprocess(x, key=k, train=True))
  out = train(images, jax.random.key(1))
  assert out.shape == (8, 32, 32, 3) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, train(images, jax.random.key(1)))
  assert not np.array_equal(out, train(images, jax.random.key(2)))
  with pytest.raises(ValueError, match='key'):
    ds.preprocess(images, train=True)


def test_imagenette_lazy_reading_resizes_to_a_fixed_square(tfds_dir):
  lazy = data.load('imagenette', data_dir=tfds_dir, validation_size=2, image_size=16)
  info = lazy.info
  assert (info.num_train, info.num_validation, info.num_test) == (10, 2, NUM_NETTE_VALIDATION)
  assert info.input_shape == (16, 16, 3)
  batch = lazy.train.gather(np.arange(10))
  assert batch['image'].shape == (10, 18, 18, 3)  # stored at round(16 / 0.875)
  assert batch['image'].dtype == np.uint8
  eager = data.load('imagenette', data_dir=tfds_dir, validation_size=2, image_size=16,
                    in_memory=True)
  np.testing.assert_array_equal(eager.train.gather(np.arange(10))['image'], batch['image'])
  np.testing.assert_array_equal(
      next(eager.test.eval_batches(5))['label'], lazy.test.gather(np.arange(5))['label'])
  for train in (True, False):
    out = lazy.preprocess(batch['image'], key=jax.random.key(0), train=train)
    assert out.shape == (10, 16, 16, 3) and out.dtype == jnp.float32
  # Evaluation: centre 16 of the stored 18 pixels (0.875 * 18 = 15.75 -> 16), no resize.
  np.testing.assert_allclose(lazy.preprocess(batch['image'][:2]), data.normalize(
      batch['image'][:2, 1:17, 1:17], data.IMAGENET_MEAN, data.IMAGENET_STD), rtol=1e-5)


def _encode(array: np.ndarray, fmt: str = 'PNG') -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=fmt)
  return buffer.getvalue()


def test_host_resize_keeps_the_centre_of_the_longer_side():
  image = np.zeros((20, 40, 3), np.uint8)
  image[:, :8, 0] = 255  # red left edge
  image[:, 8:32, 1] = 255  # green middle
  image[:, 32:, 2] = 255  # blue right edge
  out = sources.decode_image(_encode(image), 10)
  assert out.shape == (10, 10, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[..., 1], 255)
  np.testing.assert_array_equal(out[..., [0, 2]], 0)


def test_jpeg_draft_decoding_matches_a_full_resolution_resize():
  y, x = np.mgrid[0:240, 0:320]
  image = np.stack([x * 255 // 319, y * 255 // 239, (x + y) * 255 // 558], -1).astype(np.uint8)
  out = sources.decode_image(_encode(image, 'JPEG'), 30)
  full = Image.fromarray(image).resize((40, 30), Image.Resampling.BILINEAR).crop((5, 0, 35, 30))
  assert out.shape == (30, 30, 3)
  assert np.abs(out.astype(int) - np.asarray(full).astype(int)).mean() < 3


# ---------------------------------------------------------------- missing data


def test_missing_dataset_error_says_how_to_prepare(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as error:
    data.load('cifar10', data_dir=tmp_path, download=False)
  message = str(error.value)
  assert isinstance(error.value, ValueError)
  assert "'cifar10'" in message and str(tmp_path) in message
  assert f'python -m actbench.prepare cifar10 --data_dir={tmp_path}' in message
  assert 'config.dataset.download = True' in message
  assert not os.listdir(tmp_path)  # nothing was written


def test_missing_imagenet_error_asks_for_manual_download(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as error:
    data.load('imagenet2012', data_dir=tmp_path)
  message = str(error.value)
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in message
  assert 'ILSVRC2012_img_train.tar' in message and 'tfds build imagenet2012' in message
  assert '--file_format=array_record' in message
  if importlib.util.find_spec('tensorflow') is None:  # as on a fresh install
    assert 'pip install -e ".[tfds-build]"' in message


def test_missing_dataset_error_names_the_default_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError, match='imagenette') as error:
    data.load('imagenette', download=False)
  assert f'--data_dir={tmp_path}' in str(error.value)


def test_bad_arguments_are_rejected(digits):
  with pytest.raises(ValueError, match='cifar10'):
    data.load('mnist')
  with pytest.raises(ValueError, match='image_size'):
    data.load('digits', image_size=32)
  with pytest.raises(ValueError, match='validation_size'):
    data.load('digits', validation_size=1437)
  assert data.load('digits', validation_size=0.5).info.num_validation == 718  # round(1436.5/2)


def _decoding_threads() -> set[threading.Thread]:
  return {t for t in threading.enumerate() if t.name.startswith(sources.DecodingPool.THREAD_NAME)}


def test_decoding_threads_start_on_first_read_and_end_with_close_or_the_dataset(tfds_dir):
  before = _decoding_threads()
  lazy = data.load('imagenette', data_dir=tfds_dir, validation_size=2, image_size=16,
                   num_threads=3)
  assert _decoding_threads() == before  # nothing read yet: no threads
  expected = lazy.train.gather(np.arange(10))['image']
  started = _decoding_threads() - before
  assert 1 <= len(started) <= 3
  lazy.close()
  assert not any(t.is_alive() for t in started)
  # Closed, it still reads (on new threads), the same images.
  with lazy:
    np.testing.assert_array_equal(lazy.train.gather(np.arange(10))['image'], expected)
    lazy.test.gather([0])
  assert _decoding_threads() == before
  # A dataset dropped without close ends its threads too.
  dropped = data.load('imagenette', data_dir=tfds_dir, validation_size=2, image_size=16)
  dropped.train.gather([0, 1])
  started = _decoding_threads() - before
  assert started
  del dropped
  gc.collect()
  for thread in started:
    thread.join(timeout=10)
  assert _decoding_threads() == before
  # In memory, the TFDS sources are read once and closed.
  data.load('imagenette', data_dir=tfds_dir, validation_size=2, image_size=16, in_memory=True)
  assert _decoding_threads() == before


# ---------------------------------------------------------------- max_examples


def _subset(small: data.Split, full: data.Split) -> bool:
  return bool(np.isin(small.source_indices, full.source_indices).all())


def test_max_examples_keeps_a_seeded_subset_of_each_split(digits):
  capped = data.load('digits', max_examples=100, seed=5)
  info = capped.info
  assert (info.num_train, info.num_validation, info.num_test) == (100, 100, 100)
  for small, full in zip((capped.train, capped.validation, capped.test),
                         (digits.train, digits.validation, digits.test)):
    assert len(small) == 100 and _subset(small, full)
    assert len(np.unique(small.source_indices)) == 100
  assert not np.intersect1d(capped.train.source_indices, capped.validation.source_indices).size
  np.testing.assert_array_equal(capped.train.gather([7])['image'],
                                digits.train.source.read(capped.train.source_indices[[7]])[0])
  again = data.load('digits', max_examples=100, seed=5)
  assert again.fingerprint == capped.fingerprint
  other = data.load('digits', max_examples=100, seed=6)
  assert not np.array_equal(other.train.source_indices, capped.train.source_indices)
  # Spread over the split, not its first examples: digits' test indices run to 1796.
  assert capped.test.source_indices.max() > np.sort(digits.test.source_indices)[150]
  # A cap above a split's size keeps it whole; 0 keeps everything.
  roomy = data.load('digits', max_examples=400)
  assert (roomy.info.num_train, roomy.info.num_validation, roomy.info.num_test) == (400, 360, 360)
  np.testing.assert_array_equal(roomy.test.source_indices, digits.test.source_indices)
  assert data.load('digits', max_examples=0).fingerprint == digits.fingerprint
  assert data.cap_examples(digits, 0) is digits
  # Folds of a capped dataset cross-validate over its 200 non-test examples.
  folds = data.cross_validation_folds(capped, 4)
  np.testing.assert_array_equal(
      np.sort(np.concatenate([f.validation.source_indices for f in folds])),
      np.sort(np.concatenate([capped.train.source_indices, capped.validation.source_indices])))


@pytest.mark.parametrize('bad', [-1, 2.5, True, '64'])
def test_max_examples_must_be_a_count(bad):
  with pytest.raises(ValueError, match=r'max_examples must be a count >= 0 \(0: every example\)'):
    data.load('digits', max_examples=bad)


def test_max_examples_reads_only_the_examples_kept(tfds_dir):
  capped = data.load('cifar10', data_dir=tfds_dir, validation_size=10, max_examples=4)
  assert (capped.info.num_train, capped.info.num_validation, capped.info.num_test) == (4, 4, 4)
  assert isinstance(capped.train.source, sources.RecordSource)  # not all read into memory
  full = data.load('cifar10', data_dir=tfds_dir, validation_size=10)
  assert _subset(capped.train, full.train) and _subset(capped.test, full.test)
  np.testing.assert_array_equal(capped.train.gather(np.arange(4))['image'],
                                full.train.source.read(capped.train.source_indices)[0])
  capped.close()


# ---------------------------------------------------------------- synthetic:NAME


def test_synthetic_name_is_shaped_like_the_dataset_at_its_size():
  cifar = data.load('synthetic:cifar10', seed=2)
  info = cifar.info
  assert (info.name, info.num_classes, info.input_shape) == ('synthetic:cifar10', 10, (32, 32, 3))
  assert (info.num_train, info.num_validation, info.num_test) == (45_000, 5000, 10_000)
  assert cifar.preprocessing == data.Preprocessing('cifar', data.CIFAR10_MEAN, data.CIFAR10_STD)
  batch = cifar.train.gather([0, 44_999])
  assert batch['image'].shape == (2, 32, 32, 3) and batch['image'].dtype == np.uint8
  labels = cifar.test.gather(np.arange(1000))['label']
  assert labels.dtype == np.int32 and set(labels) == set(range(10))
  # Deterministic given the seed, whatever is read before or with an example.
  again = data.load('synthetic:cifar10', seed=2)
  assert again.fingerprint == cifar.fingerprint
  np.testing.assert_array_equal(again.test.gather([3, 1])['image'],
                                cifar.test.gather([1, 3])['image'][::-1])
  np.testing.assert_array_equal(again.test.gather([3, 1])['label'], labels[[3, 1]])
  other = data.load('synthetic:cifar10', seed=3)
  assert not np.array_equal(other.train.gather([0])['image'], batch['image'][:1])
  # The config's validation_size, image_size and max_examples apply as to the real dataset.
  nette = data.load('synthetic:imagenette', validation_size=100, image_size=64, max_examples=8)
  assert nette.info.input_shape == (64, 64, 3) and nette.info.num_classes == 10
  assert (nette.info.num_train, nette.info.num_validation, nette.info.num_test) == (8, 8, 8)
  assert nette.train.gather([0])['image'].shape == (1, 73, 73, 3)  # stored at 64 / 0.875
  assert nette.preprocess(nette.train.gather([0])['image']).shape == (1, 64, 64, 3)
  digits = data.load('synthetic:digits')
  assert digits.info.input_shape == (8, 8, 1) and digits.info.num_test == 360
  image = digits.train.gather([0])['image']
  assert image.dtype == np.float32 and 0.0 <= image.min() <= image.max() <= 1.0
  assert len(data.cross_validation_folds(digits, 5)) == 5
  imagenet = data.load('synthetic:imagenet2012', image_size=32)  # no memory for 1.3M images
  assert (imagenet.info.num_train, imagenet.info.num_classes) == (1_271_167, 1000)


def test_synthetic_names_are_checked():
  data.check_name('synthetic:cifar100')
  with pytest.raises(ValueError, match=r"built-in dataset NAME.*got 'cifar' \(did you mean "
                     r"'synthetic:cifar10'\?\)"):
    data.check_name('synthetic:cifar')
  with pytest.raises(ValueError, match="got ''"):
    data.load('synthetic:')
  with pytest.raises(ValueError, match='fixed image size'):
    data.load('synthetic:cifar10', image_size=64)
  with pytest.raises(ValueError, match="'synthetic:NAME'"):
    data.check_name('cifar11')


# ---------------------------------------------------------------- augmentation


def _windows(padded: np.ndarray, height: int, width: int):
  for y, x in itertools.product(range(padded.shape[0] - height + 1),
                                range(padded.shape[1] - width + 1)):
    window = padded[y:y + height, x:x + width]
    yield window
    yield window[:, ::-1]


@pytest.mark.parametrize('mode', ['constant', 'reflect'])
def test_pad_crop_flip_stays_inside_the_padded_image(mode):
  images = np.random.default_rng(0).integers(0, 256, (6, 12, 10, 3), np.uint8)
  out = np.asarray(data.pad_crop_flip(jax.random.key(0), images, padding=3, mode=mode))
  assert out.shape == images.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out, data.pad_crop_flip(jax.random.key(0), images, padding=3,
                                                        mode=mode))
  assert not np.array_equal(out, data.pad_crop_flip(jax.random.key(1), images, padding=3,
                                                    mode=mode))
  for image, crop in zip(images, out):
    padded = np.pad(image, ((3, 3), (3, 3), (0, 0)), mode=mode)
    assert any(np.array_equal(crop, w) for w in _windows(padded, 12, 10))


def test_flips_actually_mirror():
  image = np.arange(4 * 5 * 2, dtype=np.float32).reshape(4, 5, 2)
  images = np.broadcast_to(image, (32, 4, 5, 2))
  for out in (data.random_flip(jax.random.key(3), images),
              data.pad_crop_flip(jax.random.key(3), images, padding=0)):
    mirrored = np.array([np.array_equal(o, image[:, ::-1]) for o in np.asarray(out)])
    unchanged = np.array([np.array_equal(o, image) for o in np.asarray(out)])
    assert (mirrored | unchanged).all() and mirrored.any() and unchanged.any()


def test_random_resized_crop():
  images = np.random.default_rng(1).integers(0, 256, (5, 24, 24, 3), np.uint8)
  out = np.asarray(data.random_resized_crop(jax.random.key(0), images, size=12))
  assert out.shape == (5, 12, 12, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out, data.random_resized_crop(jax.random.key(0), images, size=12))
  assert not np.array_equal(out, data.random_resized_crop(jax.random.key(1), images, size=12))
  assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3  # a convex resampling of the input
  # A whole-image box is a plain antialiased bilinear resize (jax.image.resize as reference).
  whole = data.random_resized_crop(jax.random.key(0), images, size=12, scale=(1.0, 1.0),
                                   ratio=(1.0, 1.0))
  reference = jax.image.resize(images.astype(np.float32), (5, 12, 12, 3), 'linear', antialias=True)
  np.testing.assert_allclose(whole, reference, atol=1e-3)


def test_center_crop():
  images = np.arange(2 * 8 * 8 * 1, dtype=np.uint8).reshape(2, 8, 8, 1)
  out = data.center_crop(images, size=4, crop_fraction=0.5)
  assert out.shape == (2, 4, 4, 1) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, images[:, 2:6, 2:6])
  # 0.875 of 8 is 7 pixels, rows/cols 0..6, then resized 7 -> 5.
  reference = jax.image.resize(images[:, :7, :7].astype(np.float32), (2, 5, 5, 1), 'linear',
                               antialias=True)
  np.testing.assert_allclose(data.center_crop(images, size=5), reference, atol=1e-4)


def test_normalize():
  white = np.full((1, 2, 2, 3), 255, np.uint8)
  expected = (1.0 - np.array(data.IMAGENET_MEAN)) / np.array(data.IMAGENET_STD)
  out = jax.jit(data.normalize, static_argnums=(1, 2))(white, data.IMAGENET_MEAN,
                                                        data.IMAGENET_STD)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)
  np.testing.assert_allclose(data.normalize(np.ones((1, 1, 1, 3), np.float32), data.IMAGENET_MEAN,
                                            data.IMAGENET_STD)[0, 0, 0], expected, rtol=1e-6)


def test_synthetic_examples_made_when_read_equal_those_held_in_memory():
  sizes = dict(num_train=5, num_validation=2, num_test=3, seed=4)
  for name in ('cifar100', 'digits'):
    held = data.synthetic(name, **sizes)
    made = data.synthetic(name, in_memory=False, **sizes)
    assert isinstance(held.train.source, sources.ArraySource)
    assert isinstance(made.train.source, sources.RandomSource)
    assert held.fingerprint == made.fingerprint
    for a, b in zip((held.train, held.validation, held.test),
                    (made.train, made.validation, made.test)):
      for key in ('image', 'label'):
        np.testing.assert_array_equal(a.gather(np.arange(len(a)))[key],
                                      b.gather(np.arange(len(b)))[key])


def test_synthetic_dataset_is_shaped_like_the_real_one_and_reproducible():
  ds = data.synthetic('imagenet2012', num_train=6, num_validation=2, num_test=3, image_size=64)
  assert ds.info.num_classes == 1000 and ds.info.input_shape == (64, 64, 3)
  assert (len(ds.train), len(ds.validation), len(ds.test)) == (6, 2, 3)
  batch = ds.train.gather([0, 5])
  assert batch['image'].shape == (2, 73, 73, 3) and batch['image'].dtype == np.uint8
  assert batch['label'].dtype == np.int32 and np.all(batch['label'] < 1000)
  again = data.synthetic('imagenet2012', num_train=6, num_validation=2, num_test=3,
                         image_size=64)
  np.testing.assert_array_equal(again.test.gather([2])['image'], ds.test.gather([2])['image'])
  assert ds.preprocess(batch['image']).shape == (2, 64, 64, 3)
  cifar = data.synthetic('cifar100', num_train=4)
  assert cifar.info.input_shape == (32, 32, 3) and cifar.info.num_classes == 100
  with pytest.raises(ValueError, match='fixed image size'):
    data.synthetic('cifar10', image_size=64)
