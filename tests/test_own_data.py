"""Your own data: arrays, .npz files and any TFDS image-classification dataset, with one clear
error per mistake."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from actbench.engine import data, train
from configs import quickstart

RNG = np.random.default_rng(0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arrays(n, shape=(5,), classes=3, dtype=np.float32):
  x = (RNG.integers(0, 256, (n,) + shape).astype(dtype) if dtype == np.uint8
       else RNG.normal(size=(n,) + shape).astype(dtype))
  return x, np.arange(n) % classes


def test_from_arrays_keeps_every_example_and_carves_validation_deterministically():
  x, y = _arrays(50)
  xt, yt = _arrays(7)
  ds = data.from_arrays(train=(x, y), test=(xt, yt), validation_size=10, seed=3)
  info = ds.info
  assert (info.num_classes, info.input_shape) == (3, (5,))
  assert (info.num_train, info.num_validation, info.num_test) == (40, 10, 7)
  train_batch = ds.train.gather(np.arange(40))
  validation_batch = ds.validation.gather(np.arange(10))
  seen = np.concatenate([train_batch["image"], validation_batch["image"]])
  order = np.lexsort(seen.T)
  np.testing.assert_array_equal(seen[order], x[np.lexsort(x.T)])  # a partition of train
  np.testing.assert_array_equal(ds.test.gather(np.arange(7))["image"], xt)
  np.testing.assert_array_equal(ds.test.gather(np.arange(7))["label"], yt)
  again = data.from_arrays(train=(x, y), test=(xt, yt), validation_size=10, seed=3)
  np.testing.assert_array_equal(again.validation.source_indices, ds.validation.source_indices)
  assert again.fingerprint == ds.fingerprint
  other = data.from_arrays(train=(x, y), test=(xt, yt), validation_size=10, seed=4)
  assert other.fingerprint != ds.fingerprint  # another split is other data
  changed = x.copy()
  changed[0, 0] += 1
  assert data.from_arrays(train=(changed, y), test=(xt, yt), validation_size=10,
                          seed=3).fingerprint != ds.fingerprint


def test_from_arrays_takes_given_splits_images_and_uint8():
  x, y = _arrays(20, (6, 6, 3), classes=4, dtype=np.uint8)
  xv, yv = _arrays(8, (6, 6, 3), classes=4, dtype=np.uint8)
  ds = data.from_arrays(train=(x, y), validation=(xv, yv), num_classes=5)
  assert (ds.info.num_train, ds.info.num_validation, ds.info.num_test) == (20, 8, 0)
  assert ds.info.num_classes == 5 and ds.info.input_shape == (6, 6, 3)
  np.testing.assert_array_equal(ds.validation.gather(np.arange(8))["image"], xv)
  out = np.asarray(ds.preprocess(x[:2], train=False))
  np.testing.assert_allclose(out, x[:2] / 255.0, rtol=1e-6)  # no augmentation, uint8 scaled
  np.testing.assert_array_equal(ds.preprocess(x[:2], key=None, train=True), out)


@pytest.mark.parametrize("train_pair, message", [
    ((np.zeros((4, 3)), np.zeros(5)), "one integer per example"),
    ((np.zeros((4, 3)), np.array([0, 1, 0.5, 1])), "must be integers"),
    ((np.zeros((4, 3)), np.array([0, 1, -1, 1])), "class indices"),
    ((np.array([[0.0], [np.nan], [1.0], [2.0]]), np.array([0, 1, 0, 1])), "NaN or inf"),
    ((np.zeros(4), np.array([0, 1, 0, 1])), "numeric array"),
    ((np.zeros((4, 3), np.int64), np.array([0, 1, 0, 1])), "uint8 images"),
    ((np.zeros((0, 3)), np.zeros(0, int)), "no examples"),
    ("not a pair", "must be a pair"),
])
def test_from_arrays_errors_name_the_split_and_the_problem(train_pair, message):
  with pytest.raises(data.DataError, match=message) as error:
    data.from_arrays(train=train_pair)
  assert str(error.value).startswith("train")


def test_from_arrays_errors_across_splits():
  x, y = _arrays(10)
  with pytest.raises(data.DataError, match="below num_classes=3"):
    data.from_arrays(train=(x, y), test=(x[:2], np.array([0, 3])), num_classes=3)
  with pytest.raises(data.DataError, match="one shape"):
    data.from_arrays(train=(x, y), test=(np.zeros((2, 4), np.float32), np.array([0, 1])))
  with pytest.raises(data.DataError, match="either validation arrays or a validation_size"):
    data.from_arrays(train=(x, y), validation=(x, y), validation_size=3)
  with pytest.raises(ValueError, match="validation_size"):
    data.from_arrays(train=(x, y), validation_size=10)


def test_npz_files_load_like_their_arrays(tmp_path):
  x, y = _arrays(30)
  xt, yt = _arrays(6)
  path = tmp_path / "mine.npz"
  np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
  ds = data.load(f"npz:{path}", validation_size=5, seed=1)
  direct = data.from_arrays(train=(x, y), test=(xt, yt), validation_size=5, seed=1)
  assert ds.fingerprint == direct.fingerprint and ds.info.name == "npz:mine.npz"
  config = quickstart.get_config("smoke")
  config.dataset.name = f"npz:{path}"
  config.dataset.validation_size = 5
  config.seed = 1
  assert train.load_dataset(config).fingerprint == direct.fingerprint
  np.savez(tmp_path / "bad.npz", x_train=x, labels=y)
  with pytest.raises(data.DataError,
                     match=r"must hold x_train and y_train.*\['labels', 'x_train'\]"):
    data.load(f"npz:{tmp_path / 'bad.npz'}")
  np.savez(tmp_path / "half.npz", x_train=x, y_train=y, x_test=xt)
  with pytest.raises(data.DataError, match="only one of x_test and y_test"):
    data.load(f"npz:{tmp_path / 'half.npz'}")
  with pytest.raises(data.DataError, match="no .npz file"):
    data.load(f"npz:{tmp_path / 'missing.npz'}")


def test_any_tfds_dataset_by_name(tfds_dir):
  ds = data.load("tfds:cifar10", data_dir=tfds_dir, validation_size=10)
  assert ds.info.num_classes == 10 and ds.info.input_shape == (32, 32, 3)
  reference = tfds.data_source("cifar10", split="train", data_dir=tfds_dir, download=False)
  batch = ds.train.gather([0, 5])
  for image, label, index in zip(batch["image"], batch["label"], ds.train.source_indices[[0, 5]]):
    np.testing.assert_array_equal(image, reference[int(index)]["image"])
    assert label == reference[int(index)]["label"]
  np.testing.assert_allclose(ds.preprocess(batch["image"]), batch["image"] / 255.0, rtol=1e-6)
  with pytest.raises(data.DataError, match="vary in size"):
    data.load("tfds:imagenette/160px", data_dir=tfds_dir)
  nette = data.load("tfds:imagenette/160px", data_dir=tfds_dir, image_size=16,
                    validation_size=2)
  assert nette.info.input_shape == (16, 16, 3) and nette.info.num_test > 0
  assert nette.train.gather([0])["image"].shape == (1, 18, 18, 3)  # stored at 16 / 0.875
  with pytest.raises(data.DataError, match="no feature 'img'"):
    data.load("tfds:cifar10", data_dir=tfds_dir, image_key="img")
  with pytest.raises(data.DatasetNotFoundError, match="tfds build mnist"):
    data.load("tfds:mnist", data_dir=tfds_dir)


def test_unknown_dataset_names_are_explained():
  with pytest.raises(ValueError, match=r"did you mean 'cifar10'.*'npz:PATH'"):
    data.load("cifar01")


def test_grayscale_tfds_images_keep_one_channel_pixel_exact(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from tests import tfds_fixtures  # pylint: disable=import-outside-toplevel
  pixels = RNG.integers(0, 256, (16, 28, 28), np.uint8)
  examples = [{"image": Image.fromarray(p, "L"), "label": i % 10} for i, p in enumerate(pixels)]
  tfds_fixtures.prepare(tmp_path, "mnist", {"train": examples[:12], "test": examples[12:]})
  ds = data.load("tfds:mnist", data_dir=tmp_path, validation_size=2)
  assert ds.info.input_shape == (28, 28, 1) and ds.info.num_test == 4
  reference = tfds.data_source("mnist", split="train", data_dir=tmp_path, download=False)
  positions = ds.train.source_indices[:3]
  np.testing.assert_array_equal(ds.train.gather(np.arange(3))["image"],
                                np.stack([reference[int(i)]["image"] for i in positions]))


def test_folds_refuse_an_npz_validation_split_and_carve_from_train(tmp_path):
  x, y = _arrays(30, (8, 8, 1))
  xv, yv = _arrays(6, (8, 8, 1))
  np.savez(tmp_path / "given.npz", x_train=x, y_train=y, x_validation=xv, y_validation=yv)
  config = quickstart.get_config("smoke")
  config.dataset.name = f"npz:{tmp_path / 'given.npz'}"
  config.dataset.folds = 3
  given = train.load_dataset(config)
  with pytest.raises(data.DataError, match=r"^npz:given.npz: cross-validation would train on "
                     r"the validation split you gave .*config.dataset.folds = 0"):
    train.folds_of(config, given)
  config.dataset.folds = 0
  assert train.folds_of(config, given) == [given]  # validated on as given
  # The same 36 examples as train: each validates in exactly one of the 3 folds.
  np.savez(tmp_path / "pooled.npz", x_train=np.concatenate([x, xv]),
           y_train=np.concatenate([y, yv]))
  config.dataset.name = f"npz:{tmp_path / 'pooled.npz'}"
  config.dataset.folds = 3
  folds = train.folds_of(config, train.load_dataset(config))
  validated = np.concatenate([f.validation.gather(np.arange(len(f.validation)))["image"]
                              for f in folds]).reshape(36, -1)
  everything = np.concatenate([x, xv]).reshape(36, -1)
  np.testing.assert_array_equal(validated[np.lexsort(validated.T)],
                                everything[np.lexsort(everything.T)])


def test_launcher_names_the_folds_mistake_in_one_line(tmp_path):
  x, y = _arrays(30, (8, 8, 1), classes=10)
  np.savez(tmp_path / "given.npz", x_train=x, y_train=y, x_validation=x[:6], y_validation=y[:6])
  process = subprocess.run(
      [sys.executable, "-m", "actbench.main", "--config=configs/quickstart.py:smoke",
       "--config.mode=train", f"--config.dataset.name=npz:{tmp_path / 'given.npz'}",
       "--config.dataset.folds=3", f"--workdir={tmp_path / 'work'}"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
      check=False)
  assert process.returncode == 1, process.stderr[-3000:]
  errors = [line for line in process.stderr.splitlines() if line.startswith("actbench: error")]
  assert len(errors) == 1 and "Traceback" not in process.stderr
  assert "validation split you gave" in errors[0] and "config.dataset.folds = 0" in errors[0]
