"""Tests for actbench.fisher.lanczos: the SLQ spectrum of the exact empirical Fisher.

Everything is checked against the explicit Fisher of a tiny MLP (4 -> 5 -> 3, tanh, batch 8,
43 parameters, rank <= 8): per-example gradients stacked with vmap(grad), F = J^T J / B in
float64. Compiles are few (one SLQ program shared by the density tests, small Lanczos ones).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import actbench
from actbench.engine import population
from actbench.fisher import lanczos

BATCH = 8
NUM_PROBES = 400


class TinyMLP(nn.Module):
  act: object = jnp.tanh

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(self.act(nn.Dense(5)(x)))


_MODEL = TinyMLP()


def _apply(params, x):
  return _MODEL.apply({"params": params}, x)


def _exp_apply(params, x):  # exp(100 x) overflows float32 in the forward pass
  return TinyMLP(act=lambda z: jnp.exp(100.0 * z)).apply({"params": params}, x)


def _sqrt_apply(params, x):  # finite at 0, but its derivative there is infinite
  return TinyMLP(act=jnp.sqrt).apply({"params": params}, x)


@pytest.fixture(scope="module")
def problem():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.standard_normal((BATCH, 4)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, BATCH), jnp.int32)
  params = _MODEL.init(jax.random.key(0, impl="rbg"), images)["params"]
  # Non-zero biases, so that no structure of the initialization shows in the spectrum.
  params = jax.tree.map(lambda p: p + 0.1 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
  flat, unravel = ravel_pytree(params)

  def single_loss(theta, x, y):
    return lanczos.per_example_loss(_apply)(unravel(theta), x[None], y[None])[0]

  jacobian = np.asarray(jax.vmap(jax.grad(single_loss), (None, 0, 0))(flat, images, labels),
                        np.float64)
  fisher = jacobian.T @ jacobian / BATCH
  eigenvalues = np.linalg.eigvalsh(fisher)
  return dict(images=images, labels=labels, params=params, dim=flat.size, fisher=fisher,
              eigenvalues=eigenvalues)


@pytest.fixture(scope="module")
def density(problem):
  return lanczos.spectral_density(_apply, problem["params"], problem["images"],
                                  problem["labels"], num_probes=NUM_PROBES, seed=0)


def _matvec(problem, chunk_size=None):
  loss = lanczos.per_example_loss(_apply)
  return lanczos.fisher_vector_product(loss, problem["params"],
                                       (problem["images"], problem["labels"]),
                                       chunk_size=chunk_size)


def _exact_nonzero(problem):
  eigenvalues = problem["eigenvalues"]
  return eigenvalues[eigenvalues > 1e-9 * eigenvalues.max()]


def test_problem_is_rank_deficient(problem):
  assert problem["dim"] == 43
  assert len(_exact_nonzero(problem)) == BATCH


@pytest.mark.parametrize("chunk_size", [None, 3, 8])
def test_fisher_vector_product_equals_explicit_fisher(problem, chunk_size):
  matvec = jax.jit(_matvec(problem, chunk_size))
  vectors = np.random.default_rng(1).standard_normal((3, problem["dim"]))
  for v in vectors:
    got = np.asarray(matvec(jnp.asarray(v, jnp.float32)), np.float64)
    want = problem["fisher"] @ v
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_full_lanczos_recovers_every_eigenvalue(problem):
  dim = problem["dim"]
  start = np.random.default_rng(2).standard_normal(dim)
  alphas, betas = jax.jit(lambda s: lanczos.lanczos(_matvec(problem), s, dim))(
      jnp.asarray(start, jnp.float32))
  assert alphas.shape == (dim,) and betas.shape == (dim - 1,)
  nodes, weights = lanczos.gauss_quadrature(alphas, betas)
  eigenvalues = problem["eigenvalues"]
  scale = eigenvalues.max()
  # All of them: the rank-deficient Krylov space breaks down after <= 9 steps and the basis
  # continues through the null space, so T = V^T F V is similar to F.
  np.testing.assert_allclose(np.sort(nodes), eigenvalues, atol=1e-5 * scale)
  # Gauss weights: the squared components of the unit start vector along the eigenvectors.
  _, vectors = np.linalg.eigh(problem["fisher"])
  unit = start / np.linalg.norm(start)
  components = (vectors.T @ unit) ** 2
  top = np.argsort(nodes)[-BATCH:]
  np.testing.assert_allclose(weights[top], components[-BATCH:], rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-9)


def test_few_steps_give_gauss_quadrature_of_the_start_vector(problem):
  """m steps integrate polynomials of degree < 2m exactly: sum w theta^k = u^T F^k u."""
  steps = 3
  start = np.random.default_rng(3).standard_normal(problem["dim"])
  alphas, betas = jax.jit(lambda s: lanczos.lanczos(_matvec(problem), s, steps))(
      jnp.asarray(start, jnp.float32))
  nodes, weights = lanczos.gauss_quadrature(alphas, betas)
  assert nodes.shape == weights.shape == (steps,)
  unit = start / np.linalg.norm(start)
  power = np.eye(problem["dim"])
  for k in range(2 * steps):
    np.testing.assert_allclose(np.sum(weights * nodes**k), unit @ power @ unit, rtol=2e-4,
                               err_msg=f"moment {k}")
    power = power @ problem["fisher"]


def test_lanczos_rejects_bad_num_steps():
  with pytest.raises(ValueError, match="num_steps"):
    lanczos.lanczos(lambda v: v, jnp.ones(4), 5)


def test_probes_are_unit_rademacher_and_deterministic():
  probe = np.asarray(lanczos.rademacher_probe(1000, seed=7, index=3))
  assert len(np.unique(np.abs(probe))) == 1
  np.testing.assert_allclose(np.abs(probe), 1 / np.sqrt(1000), rtol=1e-6)
  assert abs(np.sum(probe > 0) - 500) < 100
  np.testing.assert_array_equal(probe, lanczos.rademacher_probe(1000, seed=7, index=3))
  assert not np.array_equal(probe, lanczos.rademacher_probe(1000, seed=7, index=4))
  assert not np.array_equal(probe, lanczos.rademacher_probe(1000, seed=8, index=3))
  # Python seeds are taken modulo 2**32, like traced uint32 ones.
  np.testing.assert_array_equal(lanczos.rademacher_probe(10, seed=-1, index=0),
                                lanczos.rademacher_probe(10, seed=jnp.uint32(2**32 - 1), index=0))


def test_density_shape_and_mass(problem, density):
  steps = BATCH + 16
  assert density.failure is None
  assert density.nodes.shape == density.weights.shape == (NUM_PROBES * steps,)
  assert np.all(density.weights >= 0)
  np.testing.assert_allclose(density.weights.sum(), 1.0, rtol=1e-9)  # moment 0
  # The null space (35 of 43 eigenvalues) is set to exactly 0.
  assert np.all((density.nodes == 0) | (density.nodes > 1e-5 * density.nodes.max()))
  np.testing.assert_allclose(density.nonpositive_mass, 35 / 43, atol=0.03)


@pytest.mark.parametrize("k", [1, 2])
def test_density_moments_match_traces(problem, density, k):
  """E[u^T A u] = tr(A)/d for unit Rademacher u, with Var = 2 (|A|_F^2 - sum A_ii^2) / d^2."""
  dim = problem["dim"]
  power = np.linalg.matrix_power(problem["fisher"], k)
  want = np.trace(power) / dim
  sigma = np.sqrt(2 * (np.sum(power**2) - np.sum(np.diag(power)**2)) / dim**2 / NUM_PROBES)
  got = np.sum(density.weights * density.nodes**k)
  assert abs(got - want) < 5 * sigma, (got, want, sigma)
  assert abs(got - want) < 0.15 * want


def test_density_matches_exact_eigenvalue_distribution(problem, density):
  eigenvalues = problem["eigenvalues"]
  exact = np.where(eigenvalues > 1e-9 * eigenvalues.max(), eigenvalues, 0.0)
  grid = np.unique(np.concatenate([exact, density.nodes]))
  slq_cdf = np.array([density.weights[density.nodes <= t].sum() for t in grid])
  exact_cdf = np.searchsorted(np.sort(exact), grid, side="right") / exact.size
  assert np.abs(slq_cdf - exact_cdf).max() < 0.03  # Kolmogorov distance
  # The nonzero nodes carrying weight are the exact nonzero eigenvalues.
  heavy = density.nodes[(density.nodes > 0) & (density.weights > 1e-4 / NUM_PROBES)]
  distance = np.min(np.abs(heavy[:, None] - _exact_nonzero(problem)[None]), axis=1)
  assert np.all(distance < 1e-4 * eigenvalues.max())
  # And so is the CDF feature over the log-eigenvalues.
  num_bins = 1000
  feature = lanczos.cdf_feature(density.nodes, density.weights, num_bins)
  exact_feature = lanczos.cdf_feature(exact, np.full(exact.size, 1 / exact.size), num_bins)
  assert feature.shape == (num_bins,) and feature.dtype == np.float32
  assert feature[-1] == 1.0 and np.all(np.diff(feature) >= 0)
  assert np.abs(feature - exact_feature).max() < 0.05


def test_float64_parameters_compute_in_float64(problem):
  with jax.enable_x64(True):
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), problem["params"])
    images = jnp.asarray(problem["images"], jnp.float64)
    flat, unravel = ravel_pytree(params)
    loss = lanczos.per_example_loss(_apply)
    single = lambda theta, x, y: loss(unravel(theta), x[None], y[None])[0]
    jacobian = np.asarray(jax.vmap(jax.grad(single), (None, 0, 0))(flat, images,
                                                                   problem["labels"]))
    result = lanczos.spectral_density(_apply, params, images, problem["labels"], num_probes=1,
                                      num_steps=flat.size)
  eigenvalues = np.linalg.eigvalsh(jacobian.T @ jacobian / BATCH)
  exact = np.where(eigenvalues > 1e-9 * eigenvalues.max(), eigenvalues, 0.0)
  assert result.nodes.dtype == np.float64 and result.failure is None
  np.testing.assert_allclose(np.sort(result.nodes), exact, atol=1e-12 * eigenvalues.max())


def test_density_is_deterministic_given_the_seed(problem, density):
  args = (_apply, problem["params"], problem["images"], problem["labels"])
  again = lanczos.spectral_density(*args, num_probes=NUM_PROBES, seed=0)
  np.testing.assert_array_equal(again.nodes, density.nodes)
  np.testing.assert_array_equal(again.weights, density.weights)
  other = lanczos.spectral_density(*args, num_probes=NUM_PROBES, seed=1)
  assert not np.array_equal(other.weights, density.weights)
  np.testing.assert_allclose(other.weights.sum(), 1.0, rtol=1e-9)


def test_chunked_density_matches_unchunked(problem):
  args = (_apply, problem["params"], problem["images"], problem["labels"])
  whole = lanczos.spectral_density(*args, num_probes=2, num_steps=10, seed=5)
  chunked = lanczos.spectral_density(*args, num_probes=2, num_steps=10, seed=5, chunk_size=3)
  np.testing.assert_allclose(np.sum(chunked.weights * chunked.nodes),
                             np.sum(whole.weights * whole.nodes), rtol=1e-4)
  np.testing.assert_allclose(lanczos.cdf_feature(chunked.nodes, chunked.weights),
                             lanczos.cdf_feature(whole.nodes, whole.weights), atol=1e-3)


@pytest.mark.parametrize("apply, zero_images, reason", [
    (_exp_apply, False, "forward"),
    (_sqrt_apply, True, "Fisher-vector product"),
])
def test_non_finite_model_fails_cleanly(problem, apply, zero_images, reason):
  images = jnp.zeros_like(problem["images"]) if zero_images else problem["images"]
  params = problem["params"]
  if zero_images:  # zero biases: every pre-activation is exactly 0, where sqrt' is infinite
    params = jax.tree.map(lambda p: p if p.ndim > 1 else jnp.zeros_like(p), params)
    assert np.all(np.isfinite(apply(params, images)))
  result = lanczos.spectral_density(apply, params, images, problem["labels"], num_probes=2,
                                    num_steps=4)
  assert result.failure is not None and reason in result.failure
  assert result.nodes.shape == result.weights.shape == (8,)
  assert np.all(np.isnan(result.nodes)) and np.all(np.isnan(result.weights))
  feature = lanczos.cdf_feature(result.nodes, result.weights, num_bins=10)
  assert feature.shape == (10,) and np.all(np.isnan(feature))


def _make_apply(act):
  model = TinyMLP(act=act)
  return lambda params, x: model.apply({"params": params}, x)


# exp(x e^(e^e)) = exp(3.8e6 x) overflows in the forward pass; the others are healthy.
POPULATION = ["tanh(x)", "relu(x)", "exp(mul(x,exp(exp(exp(one(x))))))", "swish(x)"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["map", "vmap", "grouped"])
def test_population_equals_one_at_a_time(problem, strategy):
  """One compiled program for the population, members_per_call 3 (a padded second call;
  grouped: groups of 2, the second padded); each member as spectral_density of its
  activation alone, the failing one isolated."""
  encoding = population.FunctionTable.of(POPULATION)
  args = (problem["params"], problem["images"], problem["labels"])
  together = lanczos.population_spectral_density(
      _make_apply, encoding, encoding.encode(POPULATION), *args, num_probes=3, seed=2,
      chunk_size=4, strategy=strategy, members_per_call=3, group_size=2)
  assert [d.failure is not None for d in together] == [False, False, True, False]
  for name, density in zip(POPULATION, together):
    alone = lanczos.spectral_density(_make_apply(actbench.compile(name)), *args, num_probes=3,
                                     seed=2, chunk_size=4)
    assert density.failure == alone.failure, name
    if alone.failure is not None:
      assert "forward" in alone.failure and np.all(np.isnan(density.nodes))
      continue
    # Switch branches and the compiled function compute the same operations, fused differently:
    # float32 rounding, which moves the nodes and weights of the null space's cluster (as in
    # test_chunked_density_matches_unchunked) but not the features or the moments.
    for k in (1, 2):
      np.testing.assert_allclose(np.sum(density.weights * density.nodes**k),
                                 np.sum(alone.weights * alone.nodes**k), rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(lanczos.cdf_feature(density.nodes, density.weights),
                               lanczos.cdf_feature(alone.nodes, alone.weights), atol=1e-3,
                               err_msg=name)


def test_cdf_feature_by_hand():
  # Bins of width 50 on [-100, 100]; nodes <= 0 are dropped, the rest renormalized.
  nodes = np.array([0.0, -1.0, np.exp(-60.0), np.exp(-10.0), np.exp(10.0), np.exp(200.0)])
  weights = np.array([0.3, 0.1, 0.15, 0.15, 0.2, 0.1])
  feature = lanczos.cdf_feature(nodes, weights, num_bins=4)
  np.testing.assert_allclose(feature, [0.25, 0.5, 5 / 6, 1.0], rtol=1e-6)
  density = lanczos.SpectralDensity(nodes, weights)
  np.testing.assert_allclose(density.nonpositive_mass, 0.4)


def test_cdf_feature_failures():
  assert np.all(np.isnan(lanczos.cdf_feature([0.0, -1.0], [0.5, 0.5], num_bins=3)))
  assert np.all(np.isnan(lanczos.cdf_feature([1.0, np.inf], [0.5, 0.5], num_bins=3)))
  with pytest.raises(ValueError, match="shape"):
    lanczos.cdf_feature([1.0, 2.0], [1.0], num_bins=3)
