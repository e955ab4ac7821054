"""Optimizers and learning-rate schedules built from config.train."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from actbench.engine import optim


def train_config(**fields):
  config = ml_collections.ConfigDict(dict(
      optimizer="sgd", learning_rate=0.1, momentum=0.0, nesterov=False, weight_decay=0.0,
      weight_decay_on="all", schedule="constant", end_learning_rate=0.0, decay_epochs=(),
      decay_factor=0.1, warmup_epochs=0.0, warmup_learning_rate=0.0, grad_clip_norm=0.0,
      num_epochs=10))
  config.update(fields)
  return config


def test_schedules():
  steps = 100  # per epoch
  constant = optim.learning_rate_schedule(train_config(), steps)
  assert float(constant(0)) == float(constant(999)) == pytest.approx(0.1)
  cosine = optim.learning_rate_schedule(train_config(schedule="cosine", end_learning_rate=1e-3),
                                        steps)
  assert float(cosine(0)) == pytest.approx(0.1)
  assert float(cosine(500)) == pytest.approx(0.1 * (0.5 + 0.5 * 0.01), rel=1e-4)
  assert float(cosine(1000)) == pytest.approx(1e-3)
  step = optim.learning_rate_schedule(train_config(schedule="step", decay_epochs=(3, 6)), steps)
  assert [float(step(s)) for s in (299, 300, 599, 600)] == pytest.approx(
      [0.1, 0.01, 0.01, 0.001])
  warm = optim.learning_rate_schedule(
      train_config(warmup_epochs=2, warmup_learning_rate=1e-4, schedule="cosine"), steps)
  assert float(warm(0)) == pytest.approx(1e-4, rel=1e-4)
  assert float(warm(100)) == pytest.approx((1e-4 + 0.1) / 2, rel=1e-3)
  assert float(warm(200)) == pytest.approx(0.1)
  assert float(warm(1000)) == pytest.approx(0.0, abs=1e-6)


def first_update(config, params, grads):
  optimizer = optim.make_optimizer(config, steps_per_epoch=10)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  return updates


def test_sgd_with_coupled_weight_decay_and_masks():
  params = {"dense": {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([3.0])}}
  grads = {"dense": {"kernel": jnp.array([0.5, 0.5]), "bias": jnp.array([0.5])}}
  updates = first_update(train_config(weight_decay=0.01, momentum=0.9), params, grads)
  np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * (0.5 + 0.01 * np.array([1, -2])),
                             rtol=1e-6)
  np.testing.assert_allclose(updates["dense"]["bias"], -0.1 * (0.5 + 0.03), rtol=1e-6)
  kernels_only = first_update(train_config(weight_decay=0.01, weight_decay_on="kernels"),
                              params, grads)
  np.testing.assert_allclose(kernels_only["dense"]["bias"], [-0.05], rtol=1e-6)


def test_adamw_decouples_decay_and_clipping_bounds_the_norm():
  params = {"kernel": jnp.array([2.0]), "bias": jnp.array([2.0])}
  grads = {"kernel": jnp.array([1.0]), "bias": jnp.array([1.0])}
  updates = first_update(train_config(optimizer="adamw", learning_rate=0.01, weight_decay=0.5,
                                      weight_decay_on="kernels"), params, grads)
  # Adam's first step is lr * sign(g); decoupled decay adds lr * wd * p on the kernel only.
  np.testing.assert_allclose(updates["kernel"], [-0.01 - 0.01 * 0.5 * 2.0], rtol=1e-4)
  np.testing.assert_allclose(updates["bias"], [-0.01], rtol=1e-4)
  clipped = first_update(train_config(grad_clip_norm=1.0), {"w": jnp.zeros(2)},
                         {"w": jnp.array([30.0, 40.0])})
  np.testing.assert_allclose(clipped["w"], -0.1 * np.array([0.6, 0.8]), rtol=1e-6)


@pytest.mark.parametrize("field, value, problem", [
    ("optimizer", "lbfgs", "optimizer"), ("schedule", "exponential", "schedule"),
    ("weight_decay_on", "biases", "weight_decay_on"),
])
def test_bad_names_are_rejected(field, value, problem):
  with pytest.raises(ValueError, match=problem):
    optim.make_optimizer(train_config(**{field: value}), 10)


def test_linear_schedule_after_warmup():
  linear = optim.learning_rate_schedule(
      train_config(schedule="linear", warmup_epochs=2, end_learning_rate=0.01), 100)
  assert [float(linear(s)) for s in (0, 200, 600, 1000)] == pytest.approx(
      [0.0, 0.1, 0.055, 0.01], rel=1e-5)


def test_clipping_matches_optax_on_a_tree():
  import optax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  tree = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
          "b": {"c": jnp.asarray(rng.normal(size=5), jnp.float32)}}
  np.testing.assert_allclose(optim.global_norm(tree), optax.tree.norm(tree), rtol=1e-6)
  for limit in (0.5, 100.0):  # clipped, and left alone
    ours, _ = optim.clip_by_global_norm(limit).update(tree, optax.EmptyState())
    theirs, _ = optax.clip_by_global_norm(limit).update(tree, optax.EmptyState())
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
      np.testing.assert_allclose(a, b, rtol=1e-6)
