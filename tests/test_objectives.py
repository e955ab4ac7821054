"""The training objective of config.train: losses, targets and the shared augmented batch."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from actbench.engine import data, objectives


def train_config(**fields):
  config = ml_collections.ConfigDict(dict(
      loss="softmax_cross_entropy", label_smoothing=0.0, target_threshold=0.0, augment=True,
      crop_min_scale=0.08, eval_crop_fraction=0.875, randaugment_layers=0,
      randaugment_magnitude=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, mixup_switch_prob=0.5))
  config.update(fields)
  return config


def test_softmax_cross_entropy_with_smoothing():
  logits = jnp.array([[2.0, 0.0, -1.0]])
  targets = jnp.array([[1.0, 0.0, 0.0]])
  log_p = jax.nn.log_softmax(logits)[0]
  plain = objectives.training_loss(train_config())(logits, targets)
  np.testing.assert_allclose(plain, [-log_p[0]], rtol=1e-6)
  smoothed = objectives.training_loss(train_config(label_smoothing=0.3))(logits, targets)
  expected = -(0.8 * log_p[0] + 0.1 * log_p[1] + 0.1 * log_p[2])
  np.testing.assert_allclose(smoothed, [expected], rtol=1e-6)
  # Evaluation never smooths.
  evaluation = objectives.evaluation_loss(train_config(label_smoothing=0.3))(logits, targets)
  np.testing.assert_allclose(evaluation, plain, rtol=1e-6)


def test_binary_cross_entropy_on_thresholded_targets():
  logits = jnp.array([[1.0, -2.0, 0.5, 0.0]])
  mixed = jnp.array([[0.85, 0.15, 0.0, 0.0]])  # a mixup of classes 0 and 1
  loss = objectives.training_loss(
      train_config(loss="sigmoid_binary_cross_entropy", target_threshold=0.2))(logits, mixed)
  # 0.15 < 0.2: only class 0 counts as present.
  z = np.array([1.0, -2.0, 0.5, 0.0])
  t = np.array([1.0, 0.0, 0.0, 0.0])
  expected = np.mean(np.log1p(np.exp(z)) - t * z)
  np.testing.assert_allclose(loss, [expected], rtol=1e-5)
  soft = objectives.training_loss(train_config(loss="sigmoid_binary_cross_entropy"))(
      logits, mixed)
  t = np.array([0.85, 0.15, 0.0, 0.0])
  np.testing.assert_allclose(soft, [np.mean(np.log1p(np.exp(z)) - t * z)], rtol=1e-5)


@pytest.mark.parametrize("field, value", [
    ("loss", "hinge"), ("mixup_alpha", -0.1), ("randaugment_magnitude", 31.0),
    ("crop_min_scale", 0.0), ("eval_crop_fraction", 1.5), ("target_threshold", 2.0),
])
def test_bad_fields_are_named(field, value):
  with pytest.raises(ValueError, match=f"config.train.{field}"):
    objectives.check(train_config(**{field: value}))


@pytest.fixture(scope="module")
def nette():
  return data.synthetic("imagenette", num_train=8, num_validation=0, num_test=0, image_size=32)


@pytest.mark.slow
def test_training_batch_mixes_targets_and_is_a_function_of_the_key(nette):
  raw = nette.train.gather(np.arange(8))
  config = train_config(randaugment_layers=2, randaugment_magnitude=6.0, mixup_alpha=0.1,
                        cutmix_alpha=1.0)
  batch = jax.jit(lambda k, x, y: objectives.training_batch(config, nette, k, x, y))
  key = jax.random.key(3)
  inputs, targets = batch(key, raw["image"], raw["label"])
  assert inputs.shape == (8, 32, 32, 3) and targets.shape == (8, 10)
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.isfinite(inputs))
  again = batch(key, raw["image"], raw["label"])
  np.testing.assert_array_equal(inputs, again[0])
  other = batch(jax.random.key(4), raw["image"], raw["label"])
  assert not np.array_equal(inputs, other[0])
  # Without mixing, the targets are the labels one-hot.
  _, plain = objectives.training_batch(train_config(), nette, key, raw["image"], raw["label"])
  np.testing.assert_array_equal(plain, jax.nn.one_hot(raw["label"], 10))


def test_no_augmentation_means_no_mixing_and_the_evaluation_crop(nette):
  raw = nette.train.gather(np.arange(4))
  config = train_config(augment=False, mixup_alpha=1.0, eval_crop_fraction=0.95)
  inputs, targets = objectives.training_batch(config, nette, jax.random.key(0), raw["image"],
                                              raw["label"])
  np.testing.assert_array_equal(targets, jax.nn.one_hot(raw["label"], 10))
  np.testing.assert_allclose(inputs, nette.preprocess(raw["image"]), atol=1e-6)
  cropped = objectives.evaluation_inputs(config, nette, raw["image"])
  np.testing.assert_allclose(cropped, nette.preprocess(raw["image"], crop_fraction=0.95),
                             atol=1e-6)
