"""Claims of the Fisher features' documentation, checked against independent computations:

- `published_shift=True` shifts every layer's log-eigenvalues by a constant (actbench/fisher
  docstring, `kfac._published_scales`), checked eigenvalue by eigenvalue on a model with a Dense
  layer applied to (B, T, d) inputs (T = 9 tokens), whose default factors are first checked
  against brute force.
- `fisher_type='sampled'` draws labels from the model's predictive distribution: the Monte Carlo
  mean of G over many keys converges to its expectation under the softmax, computed exactly in
  float64 by summing over the classes, with the spread predicted by the exact variance.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actbench import fisher

# ---------------------------------------------------------------------------------------------
# published_shift

BATCH = 8
CHUNK = 4  # two chunks: the row counts must add up over chunks
IMAGE = (5, 5, 2)
CONV_FEATURES = 5
TOKENS = 9  # the conv's 3x3 output locations, one token each
TOKEN_FEATURES = 6
NUM_CLASSES = 3


class Tokens(nn.Module):
  """conv -> (B, T, d) tokens -> Dense on every token -> mean over T -> Dense."""

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Conv(CONV_FEATURES, (3, 3), padding="VALID", name="conv")(x))  # (B,3,3,5)
    x = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, T, d_in)
    x = jnp.tanh(nn.Dense(TOKEN_FEATURES, name="tokens")(x))  # (B, T, 6)
    return nn.Dense(NUM_CLASSES, name="head")(x.mean(axis=1))


def _params(model, images, seed):
  """He-normal kernels, N(0, 0.3^2) biases, from NumPy (no JAX initializer to compile)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images[:1]))["params"]
  rng = np.random.default_rng(seed)
  return {name: {k: (rng.standard_normal(v.shape) * (np.sqrt(2 / np.prod(v.shape[:-1]))
                                                    if k == "kernel" else 0.3)
                     ).astype(np.float32) for k, v in p.items()}
          for name, p in shapes.items()}


@pytest.fixture(scope="module")
def tokens_model():
  """(model, params, images, labels, default factors, published factors), by layer path."""
  model = Tokens()
  images = np.random.default_rng(0).standard_normal((BATCH,) + IMAGE).astype(np.float32)
  labels = np.arange(BATCH) % NUM_CLASSES
  params = _params(model, images, 1)
  variables = {"params": params}
  default = fisher.kfac_factors(model, variables, images, labels, batch_chunk=CHUNK)
  published = fisher.kfac_factors(model, variables, images, labels, batch_chunk=CHUNK,
                                  published_shift=True)
  return (model, params, images, labels, {f.path: f for f in default},
          {f.path: f for f in published})


def _token_dense_brute_force(params, images, labels):
  """(A, G) of the 'tokens' Dense by definition, float64: A = sum over the B*T rows of
  [a, 1][a, 1]^T / B and G = sum over the rows of g g^T / (B*T), g the gradient of the summed
  cross-entropy with respect to the layer's output at one token of one example."""
  hi = jax.lax.Precision.HIGHEST

  def forward(perturbation):
    p = params["conv"]
    y = jax.lax.conv_general_dilated(jnp.asarray(images), p["kernel"], (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=hi)
    a = jnp.tanh(y + p["bias"]).reshape(BATCH, TOKENS, CONV_FEATURES)
    z = jnp.dot(a, params["tokens"]["kernel"], precision=hi) + params["tokens"]["bias"]
    h = jnp.tanh(z + perturbation).mean(axis=1)
    logits = jnp.dot(h, params["head"]["kernel"], precision=hi) + params["head"]["bias"]
    loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1).sum()
    return loss, a

  grads, inputs = jax.jit(jax.grad(forward, has_aux=True))(
      jnp.zeros((BATCH, TOKENS, TOKEN_FEATURES), jnp.float32))
  rows = np.concatenate([np.asarray(inputs, np.float64).reshape(-1, CONV_FEATURES),
                         np.ones((BATCH * TOKENS, 1))], axis=1)
  g = np.asarray(grads, np.float64).reshape(-1, TOKEN_FEATURES)
  a = sum(np.outer(r, r) for r in rows) / BATCH
  return a, sum(np.outer(v, v) for v in g) / (BATCH * TOKENS)


def test_token_dense_default_factors_are_the_definition(tokens_model):
  """The package docstring's A and G for a Dense layer on (B, T, d) inputs, by brute force:
  A divides by B (examples), G by B*T (rows)."""
  _, params, images, labels, default, _ = tokens_model
  layer = default["tokens"]
  assert layer.kind == "dense" and layer.A.shape == (1, CONV_FEATURES + 1, CONV_FEATURES + 1)
  a, g = _token_dense_brute_force(params, images, labels)
  np.testing.assert_allclose(layer.A[0], a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
  np.testing.assert_allclose(layer.G[0], g, rtol=1e-4, atol=1e-6 * np.abs(g).max())
  # The bias entry of A counts the rows per example: T.
  assert layer.A[0, -1, -1] == pytest.approx(TOKENS, rel=1e-6)


def _log_spectrum(factors):
  (values,), _ = fisher.log_eigenvalues([factors])
  return np.sort(values)


def _expected_shift(layer_kind, d_in, tokens):
  """The constant by which published_shift moves a layer's log-eigenvalues.

  conv: the batch-mean loss divides G by B^2: -2 log B.
  dense: A * B / (d_in + 1) and G * B*T / (B^2 (d_in + 1)) (`kfac._published_scales`: the
  sums divided by d_in + 1 instead of by their counts B and B*T, G also by B^2), so
  log T - 2 log(d_in + 1). The package docstring (actbench/fisher/__init__.py) states
  -2 log(d_in + 1) for every Dense layer, which holds only for T = 1.
  """
  if layer_kind == "dense":
    return math.log(tokens) - 2 * math.log(d_in + 1)
  return -2 * math.log(BATCH)


@pytest.mark.parametrize("path, d_in, tokens", [
    ("conv", None, None),
    ("tokens", CONV_FEATURES, TOKENS),  # Dense on (B, T, d): T = 9
    ("head", TOKEN_FEATURES, 1),  # Dense on (B, d): the docstring's case
])
def test_published_shift_moves_log_eigenvalues_by_a_constant(tokens_model, path, d_in, tokens):
  *_, default, published = tokens_model
  kind = default[path].kind
  shift = _expected_shift(kind, d_in, tokens)
  ours = _log_spectrum(published[path])
  expected = _log_spectrum(default[path]) + shift
  # The head's G is singular (each example's softmax gradient sums to 0): its zero eigenvalue
  # comes out as rounding noise, dropped or not. Compare the spectrum above that level
  # (e^-25 of the largest); the genuine eigenvalues are far above it.
  cutoff = expected.max() - 25
  assert abs(ours.max() - expected.max()) < 1e-9
  assert np.all(np.abs(ours - cutoff) > 1) and np.all(np.abs(expected - cutoff) > 1)
  kept = expected[expected > cutoff]
  np.testing.assert_allclose(ours[ours > cutoff], kept, rtol=0, atol=1e-9)
  # Every product is genuine except, for the head, the A eigenvalues times G's zero one.
  layer = default[path]
  assert kept.size == layer.num_weights - (layer.A.shape[-1] if path == "head" else 0)


def test_package_docstring_dense_shift_on_token_inputs(tokens_model):
  """The package docstring's shift for a Dense layer on (B, T, d) inputs: log T - 2 log(d_in +
  1), not the -2 log(d_in + 1) of (B, d) inputs (T = 1)."""
  *_, default, published = tokens_model
  actual = _log_spectrum(published["tokens"]).max() - _log_spectrum(default["tokens"]).max()
  documented = math.log(TOKENS) - 2 * math.log(CONV_FEATURES + 1)
  assert actual == pytest.approx(documented, abs=1e-9)
  assert abs(actual + 2 * math.log(CONV_FEATURES + 1)) > 1.0  # T = 9 tokens: visibly apart


# ---------------------------------------------------------------------------------------------
# sampled Fisher

SAMPLE_INPUTS = 5  # distinct inputs
SAMPLE_FEATURES = 3
SAMPLE_CLASSES = 4
REPEATS = 200  # copies of each input per batch: a batch averages REPEATS label draws each
NUM_KEYS = 24


class Softmax(nn.Module):
  """One Dense layer: logits of SAMPLE_CLASSES classes."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(SAMPLE_CLASSES, name="out")(x)


@pytest.fixture(scope="module")
def sampled_setup():
  rng = np.random.default_rng(5)
  inputs = rng.standard_normal((SAMPLE_INPUTS, SAMPLE_FEATURES)).astype(np.float32)
  params = {"out": {"kernel": rng.standard_normal((SAMPLE_FEATURES, SAMPLE_CLASSES)
                                                  ).astype(np.float32),
                    "bias": (0.5 * rng.standard_normal(SAMPLE_CLASSES)).astype(np.float32)}}
  # Labels the model finds unlikely, so that the empirical Fisher is far from the expected one.
  logits = inputs.astype(np.float64) @ params["out"]["kernel"] + params["out"]["bias"]
  labels = np.argmin(logits, axis=1)
  images = np.tile(inputs, (REPEATS, 1))  # example b is input b % SAMPLE_INPUTS
  batch_labels = np.tile(labels, REPEATS)
  model = Softmax()
  variables = {"params": params}
  runs = [fisher.kfac_factors(model, variables, images, batch_labels, fisher_type="sampled",
                              key=k, batch_chunk=250)[0] for k in range(NUM_KEYS)]
  empirical = fisher.kfac_factors(model, variables, images, batch_labels, batch_chunk=250)[0]
  return inputs, params, labels, runs, empirical


def _softmax64(inputs, params):
  z = inputs.astype(np.float64) @ params["out"]["kernel"].astype(np.float64)
  z = z + params["out"]["bias"].astype(np.float64)
  z = z - z.max(axis=1, keepdims=True)
  p = np.exp(z)
  return p / p.sum(axis=1, keepdims=True)


def _exact_sampled_moments(p):
  """E and Var of one row's g g^T, g = p - onehot(y), y ~ Categorical(p), per input, by
  summing over every class y (float64): shapes (inputs, C, C)."""
  classes = p.shape[1]
  mean = np.zeros((p.shape[0], classes, classes))
  second = np.zeros_like(mean)
  for y in range(classes):
    g = p - np.eye(classes)[y]
    outer = g[:, :, None] * g[:, None, :]
    mean += p[:, y, None, None] * outer
    second += p[:, y, None, None] * outer**2
  return mean, second - mean**2


def test_sampled_G_converges_to_the_predictive_expectation(sampled_setup):
  """Mean over keys of G -> (1/N) sum_n (diag(p_n) - p_n p_n^T), within 4 standard errors;
  the spread of G over keys matches the exact variance; A does not depend on the labels."""
  inputs, params, _, runs, _ = sampled_setup
  p = _softmax64(inputs, params)
  mean, var = _exact_sampled_moments(p)
  # The closed form the brief states: E[g g^T] = diag(p) - p p^T.
  np.testing.assert_allclose(mean, np.stack([np.diag(q) - np.outer(q, q) for q in p]),
                             atol=1e-15)
  expected = mean.mean(axis=0)
  rows = SAMPLE_INPUTS * REPEATS
  # One run's G averages `rows` independent rows, REPEATS of each input.
  per_run_var = var.sum(axis=0) * REPEATS / rows**2
  stack = np.stack([run.G[0] for run in runs])  # (keys, C, C)
  standard_error = np.sqrt(per_run_var / NUM_KEYS)
  deviation = np.abs(stack.mean(axis=0) - expected)
  assert np.all(deviation <= 4 * standard_error + 1e-6), deviation / standard_error
  # Independent draws per example and per key: the spread over keys is the predicted one (the
  # sample standard deviation of 24 draws is within 0.5x..2x of the truth with overwhelming
  # probability; a key that was ignored, or noise shared by examples, would break this).
  observed = stack.std(axis=0, ddof=1)
  ratio = observed / np.sqrt(per_run_var)
  assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio
  # A is the inputs' moment [x, 1][x, 1]^T averaged over the batch, whatever the labels.
  rows64 = np.concatenate([inputs.astype(np.float64), np.ones((SAMPLE_INPUTS, 1))], axis=1)
  a = rows64.T @ rows64 / SAMPLE_INPUTS
  for run in runs:
    np.testing.assert_allclose(run.A[0], a, rtol=1e-5, atol=1e-6)
  # Different keys draw different labels.
  assert not np.allclose(runs[0].G, runs[1].G)


def test_empirical_G_uses_the_true_labels_and_differs(sampled_setup):
  inputs, params, labels, runs, empirical = sampled_setup
  p = _softmax64(inputs, params)
  g = p - np.eye(SAMPLE_CLASSES)[labels]
  exact = np.einsum("ni,nj->ij", g, g) / SAMPLE_INPUTS
  np.testing.assert_allclose(empirical.G[0], exact, rtol=1e-5, atol=1e-6)
  expected, var = _exact_sampled_moments(p)
  expected = expected.mean(axis=0)
  standard_error = np.sqrt(var.sum(axis=0) * REPEATS / (SAMPLE_INPUTS * REPEATS)**2
                           / NUM_KEYS)
  sampled_mean = np.stack([run.G[0] for run in runs]).mean(axis=0)
  # Far outside the sampled mean's error bars: the empirical Fisher is a different quantity.
  assert np.abs(exact - expected).max() > 50 * standard_error.max()
  assert np.abs(empirical.G[0] - sampled_mean).max() > 50 * standard_error.max()
