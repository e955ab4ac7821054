"""Helpers of the model tests: architecture facts by tracing only, parameters drawn by NumPy.

XLA:CPU compiles dominate those tests' runtime: `trace` runs a model abstractly
(`jax.eval_shape`) and `numpy_variables` draws parameters without compiling a JAX sampler per
shape."""

import jax
import jax.numpy as jnp
import numpy as np


def keys(seed=0):
  key = jax.random.key(seed)
  return {"params": key, "dropout": jax.random.fold_in(key, 1)}


def normal(shape, seed=0):
  """Standard normal float32 inputs, from NumPy."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def param_count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def trace(model, shape, train=False, act=jax.nn.relu):
  """(output, variables, (shape, dtype) of every activation call), all abstract."""
  seen = []

  def recording_act(x):
    seen.append((x.shape, x.dtype))
    return act(x)

  out, variables = jax.eval_shape(lambda: model.clone(act=recording_act).init_with_output(
      keys(), jnp.zeros(shape), train=train))
  return out, variables, seen


def numpy_variables(model, x, seed=0, offsets=("bias", "mean"), scale_jitter=0.0):
  """The model's variables drawn by NumPy: He-normal kernels, N(0, 0.1^2) for the leaves named
  in `offsets` (norm offsets are called 'bias' too), 1 + U[0, scale_jitter) for the rest (norm
  scales, running variances)."""
  rng = np.random.default_rng(seed)

  def value(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.standard_normal(leaf.shape) * np.sqrt(2 / fan_in), jnp.float32)
    if name in offsets:
      return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), jnp.float32)
    return jnp.asarray(1 + scale_jitter * rng.random(leaf.shape), jnp.float32)

  abstract = jax.eval_shape(lambda: model.init(keys(), x))
  return jax.tree_util.tree_map_with_path(value, abstract)
