"""The spectrum of the exact empirical Fisher by stochastic Lanczos quadrature (SLQ).

An alternative to the K-FAC features of METHOD.md section 3 (`fisher.method = 'lanczos'`): the
spectral density of the empirical Fisher information matrix over ALL parameters,

    F = (1/B) sum_i g_i g_i^T,    g_i = grad of the cross-entropy of example i (true label),

with no block or Kronecker approximation. F is never formed: with J the (B, num_params) Jacobian
of the per-example losses, F v = J^T (J v) / B is one jvp and one vjp per chunk of the batch.

    density = lanczos.spectral_density(model_apply, params, images, labels)
    feature = lanczos.cdf_feature(density.nodes, density.weights, num_bins=100)

SLQ: for each probe u (unit Rademacher vector), `num_steps` Lanczos steps give a tridiagonal T;
its eigenvalues (Ritz values) are the nodes and the squared first components of its
eigenvectors the weights of a Gauss quadrature with sum_j w_j f(theta_j) = u^T f(F) u exactly
for polynomials f of degree < 2 * num_steps. Averaged over probes this estimates
(1/num_params) trace f(F), i.e. integrals over the eigenvalue distribution of F.

Facts worth knowing:
  * rank F <= B, so the Krylov space of a probe has dimension <= B + 1 and, in exact
    arithmetic, B + 1 steps give the exact distinct eigenvalues of F as nodes (only the weights
    are random). Most of the mass (1 - rank/num_params in expectation) sits at eigenvalue 0. In
    floating point that null space is a cluster of tiny eigenvalues of either sign which takes a
    few nodes of its own, so the default num_steps is B + 16: on the small CNN (B = 64 and 128,
    float32) B + 1 steps put the CDF feature (1,000 bins) within 1e-3 of the probe's exact
    quadrature and B + 16 within 1e-6.
  * Full reorthogonalization (classical Gram-Schmidt, two passes, at every step) keeps the
    Lanczos basis orthonormal to working precision, so there are no spurious copies of
    eigenvalues. When the Krylov space is exhausted (breakdown) the iteration continues from a
    fresh deterministic vector orthogonal to the basis, with a zero coupling: the new block's
    nodes get zero weight, and num_steps = num_params yields every eigenvalue.
  * Precision: everything runs in the dtype of the parameters (float32 unless jax_enable_x64
    and float64 parameters). Ritz values then carry absolute errors of order
    eps * ||F|| (about 1e-7 of the largest eigenvalue in float32), so eigenvalues below roughly
    1e-6 of the largest are not resolved, and the null space's nodes come out as tiny numbers
    of either sign. `spectral_density` therefore sets nodes at or below
    `zero_rtol * max(nodes)` to exactly 0. Matrix products run at 'highest' precision (no
    TF32 on GPUs), which the symmetry of the Fisher-vector product depends on.
  * Probes are Rademacher vectors drawn from an integer hash of (seed, probe, coordinate):
    deterministic given the seed and identical on every platform, with no RNG to compile.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.flatten_util import ravel_pytree

from actbench.engine import caching, population

# The CDF feature's range of natural-log eigenvalues (as the K-FAC features, METHOD.md section 3).
LOG_RANGE = (-100.0, 100.0)

# Salts that separate the hash streams of probes and of restart vectors.
_PROBE_SALT = 0x5C1A7E11
_RESTART_SALT = 0x2E57A127


# ---------------------------------------------------------------- deterministic vectors


def _mix32(x: jax.Array) -> jax.Array:
  """A bijection of uint32 with full avalanche (the 'lowbias32' integer hash)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _hash_bits(dim: int, *key) -> jax.Array:
  """dim pseudo-random uint32 words that depend only on the integers in `key`."""
  h = jnp.uint32(0)
  for k in key:
    k = jnp.uint32(k % 2**32) if isinstance(k, int) else jnp.asarray(k).astype(jnp.uint32)
    h = _mix32(h ^ k)
  return _mix32(_mix32(jnp.arange(dim, dtype=jnp.uint32) ^ h) + h)


def rademacher_probe(dim: int, seed, index, dtype: Any = jnp.float32) -> jax.Array:
  """The probe `index` of `seed`: a unit vector with entries +-1/sqrt(dim). Jittable (seed and
  index may be traced integers); the same numbers on every platform."""
  signs = 1.0 - 2.0 * (_hash_bits(dim, _PROBE_SALT, seed, index) >> 31).astype(dtype)
  return signs / jnp.sqrt(jnp.asarray(dim, dtype))


def _restart_vector(dim: int, step, dtype) -> jax.Array:
  """A generic vector (entries uniform in [-1, 1)) to continue Lanczos after a breakdown."""
  bits = _hash_bits(dim, _RESTART_SALT, step) >> 8  # 24 bits
  return bits.astype(dtype) * (2.0 / 2**24) - 1.0


# ---------------------------------------------------------------- Fisher-vector products


def per_example_loss(model_apply: Callable[[Any, jax.Array], jax.Array]):
  """(params, images, labels) -> the (B,) cross-entropy losses of `model_apply(params, images)`
  (logits (B, num_classes)) against the integer labels."""
  def loss(params, images, labels):
    logits = model_apply(params, images)
    # At least float32 (bfloat16 logits are upcast), float64 when the model computes in it.
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    labels = jnp.asarray(labels, jnp.int32)
    return -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  return loss


def _chunked(batch: Sequence[jax.Array], chunk_size: int | None):
  """The batch as (num_chunks, chunk_size, ...) arrays and a (num_chunks, chunk_size) float
  mask. A short last chunk is filled with copies of the first examples, masked out."""
  size = batch[0].shape[0]
  chunk = size if chunk_size is None else max(1, min(int(chunk_size), size))
  num_chunks = -(-size // chunk)
  index = np.arange(num_chunks * chunk)
  mask = (index < size).reshape(num_chunks, chunk)
  index = (index % size).reshape(num_chunks, chunk)
  chunks = tuple(jnp.asarray(x)[index] if num_chunks * chunk != size
                 else jnp.asarray(x).reshape((num_chunks, chunk) + x.shape[1:]) for x in batch)
  return chunks, jnp.asarray(mask)


def fisher_vector_product(loss_per_example: Callable[..., jax.Array], params,
                          batch: Sequence[jax.Array], *,
                          chunk_size: int | None = None) -> Callable[[jax.Array], jax.Array]:
  """v -> F v for the empirical Fisher F = J^T J / B of the per-example losses, on flat vectors.

  Args:
    loss_per_example: (params, *chunk) -> (b,) losses of the b examples of a chunk of `batch`.
    params: the pytree F is taken at; vectors are laid out as `ravel_pytree(params)[0]`.
    batch: arrays with a leading batch axis B (e.g. (images, labels)).
    chunk_size: examples per jvp/vjp (memory of the activations); None: the whole batch.

  Returns:
    matvec(v) for v of shape (num_params,); jittable, each call one jvp and one vjp per chunk,
    summed in a scan. F is never formed.
  """
  flat, unravel = ravel_pytree(params)
  chunks, mask = _chunked(batch, chunk_size)
  size = batch[0].shape[0]

  def matvec(v: jax.Array) -> jax.Array:
    v = jnp.asarray(v, flat.dtype)

    def add_chunk(total, xs):
      weight, data = xs[0], xs[1:]
      losses = lambda theta: loss_per_example(unravel(theta), *data)
      _, jv = jax.jvp(losses, (flat,), (v,))
      _, vjp = jax.vjp(losses, flat)
      (jtu,) = vjp((jv * weight).astype(jv.dtype))
      return total + jtu, None

    total, _ = jax.lax.scan(add_chunk, jnp.zeros_like(flat), (mask.astype(flat.dtype),) + chunks)
    return total / size

  return matvec


# ---------------------------------------------------------------- Lanczos and quadrature


def lanczos(matvec: Callable[[jax.Array], jax.Array], start: jax.Array,
            num_steps: int) -> tuple[jax.Array, jax.Array]:
  """`num_steps` Lanczos steps for a symmetric operator, with full reorthogonalization.

  Args:
    matvec: v -> A v on vectors of the shape and dtype of `start`.
    start: the start vector (normalized here), shape (dim,).
    num_steps: the size m of the tridiagonal matrix (at most dim).

  Returns:
    (alphas (m,), betas (m - 1,)): the diagonal and off-diagonal of T = V^T A V, with V the
    orthonormal Lanczos basis started at `start`. A zero beta marks a breakdown (an invariant
    subspace), after which the basis continues from a deterministic generic vector. Jittable;
    memory (m + 1) * dim for the basis. Runs in start's dtype.
  """
  start = jnp.asarray(start)
  (dim,) = start.shape
  dtype = start.dtype
  if not 1 <= num_steps <= dim:
    raise ValueError(f"num_steps must be in [1, dim={dim}], got {num_steps}")
  eps = jnp.finfo(dtype).eps
  dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)

  def orthogonalize(basis, w):
    # Classical Gram-Schmidt twice ("twice is enough"); rows not yet filled are zero.
    for _ in range(2):
      w = w - dot(dot(basis, w), basis)
    return w

  def step(j, carry):
    basis, alphas, betas, scale = carry
    v = basis[j]
    w = matvec(v).astype(dtype)
    scale = jnp.maximum(scale, jnp.linalg.norm(w))
    alpha = dot(v, w)
    w = orthogonalize(basis, w)
    beta = jnp.linalg.norm(w)
    broke = beta <= eps * scale

    def restart(_):
      fresh = orthogonalize(basis, _restart_vector(dim, j, dtype))
      # (After dim steps nothing is left to restart with: the guard keeps the unused row finite.)
      norm = jnp.maximum(jnp.linalg.norm(fresh), jnp.finfo(dtype).tiny)
      return fresh / norm, jnp.zeros((), dtype)

    next_v, beta = jax.lax.cond(broke, restart, lambda _: (w / beta, beta), None)
    basis = basis.at[j + 1].set(next_v)
    return basis, alphas.at[j].set(alpha), betas.at[j].set(beta), scale

  basis = jnp.zeros((num_steps + 1, dim), dtype).at[0].set(start / jnp.linalg.norm(start))
  init = (basis, jnp.zeros(num_steps, dtype), jnp.zeros(num_steps, dtype), jnp.zeros((), dtype))
  _, alphas, betas, _ = jax.lax.fori_loop(0, num_steps, step, init)
  return alphas, betas[:-1]


def gauss_quadrature(alphas, betas) -> tuple[np.ndarray, np.ndarray]:
  """(nodes, weights), float64, of the tridiagonal matrix (alphas, betas): its eigenvalues and
  the squared first components of its unit eigenvectors (summing to 1). Host-side."""
  alphas = np.asarray(alphas, np.float64)
  betas = np.asarray(betas, np.float64)
  if alphas.size == 1:
    return alphas.copy(), np.ones(1)
  nodes, vectors = scipy.linalg.eigh_tridiagonal(alphas, betas)
  return nodes, vectors[0] ** 2


# ---------------------------------------------------------------- the spectral density


@dataclasses.dataclass(frozen=True)
class SpectralDensity:
  """The SLQ estimate of the eigenvalue distribution of F: point masses `weights` (summing to
  1) at `nodes`, float64, (num_probes * num_steps,), probe by probe. On failure both are NaN and
  `failure` says why (otherwise None)."""

  nodes: np.ndarray
  weights: np.ndarray
  failure: str | None = None

  @property
  def nonpositive_mass(self) -> float:
    """The weight of the nodes <= 0 (dropped by `cdf_feature`): mostly F's null space."""
    return float(np.sum(self.weights[self.nodes <= 0]))


def _slq_arrays(model_apply, params, images, labels, seed, *, num_steps, num_probes, chunk_size):
  """(per-example losses, alphas, betas) of every probe: the traced part of the density."""
  loss = per_example_loss(model_apply)
  chunks, _ = _chunked((images, labels), chunk_size)
  losses = jax.lax.map(lambda chunk: loss(params, *chunk), chunks).reshape(-1)
  losses = losses[:images.shape[0]]
  matvec = fisher_vector_product(loss, params, (images, labels), chunk_size=chunk_size)
  flat, _ = ravel_pytree(params)

  def one_probe(index):
    start = rademacher_probe(flat.size, seed, index, flat.dtype)
    return lanczos(matvec, start, num_steps)

  alphas, betas = jax.lax.map(one_probe, jnp.arange(num_probes, dtype=jnp.uint32))
  return losses, alphas, betas


_slq = jax.jit(_slq_arrays, static_argnames=("model_apply", "num_steps", "num_probes",
                                             "chunk_size"))


def _defaults(params, batch: int, num_steps, zero_rtol) -> tuple[int, float]:
  flat, _ = ravel_pytree(params)
  num_steps = min(batch + 16, flat.size) if num_steps is None else int(num_steps)
  if zero_rtol is None:
    zero_rtol = 100 * float(jnp.finfo(flat.dtype).eps)
  return num_steps, zero_rtol


def _density(losses, alphas, betas, zero_rtol: float) -> SpectralDensity:
  """The host side of `spectral_density`: quadratures of one model's tridiagonal matrices."""
  losses, alphas, betas = np.asarray(losses), np.asarray(alphas), np.asarray(betas)
  num_probes, num_steps = alphas.shape
  size = num_probes * num_steps
  failure = None
  if not np.all(np.isfinite(losses)):
    failure = (f"non-finite loss in the forward pass for {int(np.sum(~np.isfinite(losses)))} "
               f"of {losses.size} examples")
  elif not (np.all(np.isfinite(alphas)) and np.all(np.isfinite(betas))):
    failure = "non-finite Fisher-vector product (gradients overflow or are NaN)"
  if failure is not None:
    return SpectralDensity(np.full(size, np.nan), np.full(size, np.nan), failure)
  quadratures = [gauss_quadrature(a, b) for a, b in zip(alphas, betas)]
  nodes = np.concatenate([q[0] for q in quadratures])
  weights = np.concatenate([q[1] for q in quadratures]) / num_probes
  nodes = np.where(nodes <= zero_rtol * max(np.max(nodes), 0.0), 0.0, nodes)
  return SpectralDensity(nodes, weights)


def spectral_density(model_apply: Callable[[Any, jax.Array], jax.Array], params,
                     images, labels, *, num_steps: int | None = None, num_probes: int = 16,
                     seed: int = 0, chunk_size: int | None = None,
                     zero_rtol: float | None = None) -> SpectralDensity:
  """The SLQ spectral density of the empirical Fisher of all `params` on one batch.

  Args:
    model_apply: (params, images) -> logits (B, num_classes), e.g.
      `lambda p, x: model.apply({'params': p}, x)`. A jit static argument: pass the same
      function object to reuse the compiled program.
    params: the parameters F is taken with respect to (every leaf, flattened).
    images, labels: the batch; labels are integer classes (the empirical Fisher).
    num_steps: Lanczos steps per probe; None: min(B + 16, num_params), enough for the exact
      nodes since rank F <= B (module docstring). Memory (num_steps + 1) * num_params.
    num_probes: Rademacher probes averaged (run one after another).
    seed: picks the probes; the result is deterministic given it.
    chunk_size: examples per jvp/vjp; None: the whole batch at once.
    zero_rtol: nodes <= zero_rtol * max(nodes) are set to 0 (numerically zero);
      None: 100 * eps of the parameters' dtype (about 1.2e-5 in float32).

  Returns:
    A SpectralDensity. A non-finite loss, or a non-finite Fisher-vector product (e.g. an
    activation whose value or derivative overflows), gives NaN nodes and weights and a
    `failure` reason instead of an exception.
  """
  images = jnp.asarray(images)
  labels = jnp.asarray(labels)
  num_steps, zero_rtol = _defaults(params, images.shape[0], num_steps, zero_rtol)
  with jax.default_matmul_precision("highest"):
    losses, alphas, betas = _slq(model_apply, params, images, labels,
                                 jnp.asarray(seed % 2**32, jnp.uint32), num_steps=num_steps,
                                 num_probes=int(num_probes), chunk_size=chunk_size)
  return _density(losses, alphas, betas, zero_rtol)


# ---------------------------------------------------------------- populations

_POPULATION_PROGRAMS = caching.BoundedCache(8)


def _population_program(make_apply, encoding, normalize, strategy, num_steps, num_probes,
                        chunk_size, group_size):
  key = (make_apply, encoding, normalize, strategy, num_steps, num_probes, chunk_size,
         group_size, jax.device_count())
  return _POPULATION_PROGRAMS.get(key, lambda: _build_population_program(*key[:-1]))


def _build_population_program(make_apply, encoding, normalize, strategy, num_steps, num_probes,
                              chunk_size, group_size):
  def member(codes, params, images, labels, seed, present=None):
    model_apply = make_apply(encoding.activation(codes, normalize, present))
    return _slq_arrays(model_apply, params, images, labels, seed, num_steps=num_steps,
                       num_probes=num_probes, chunk_size=chunk_size)

  sharded = population.sharded_member_program(member, strategy, num_shared=4,
                                              encoding=encoding, group_size=group_size)

  def program(codes, *shared):
    with jax.default_matmul_precision("highest"):
      return sharded(codes, *shared)

  return program


def population_spectral_density(make_apply: Callable[[Callable], Callable], encoding, codes,
                                params, images, labels, *, num_steps: int | None = None,
                                num_probes: int = 16, seed: int = 0,
                                chunk_size: int | None = None, zero_rtol: float | None = None,
                                strategy: str = "auto", normalize: bool = False,
                                members_per_call: int = 16,
                                group_size: int = population.DEFAULT_GROUP_SIZE
                                ) -> list[SpectralDensity]:
  """`spectral_density` of many activations, in one compiled program (not one per activation).

  Args:
    make_apply: activation -> model_apply (params, images) -> logits, e.g.
      `lambda act: lambda p, x: make_model(act).apply({'params': p}, x)`. Part of the compiled
      program's cache key: pass the same object to reuse it.
    encoding, codes: the population form (`population.Encoding` or `FunctionTable`) and the
      members' codes (n, num_slots).
    params, images, labels, num_steps, num_probes, seed, chunk_size, zero_rtol: as in
      `spectral_density`, shared by every member (each member's probes are the same).
    strategy, group_size: 'map' (lax.map over members; only each member's operators run;
      CPU), 'vmap' (accelerators; memory of the Lanczos bases times the members of a call),
      'grouped' (vmap within groups of group_size) or 'auto'.
    normalize: members use (f - E f) / std f (see `Encoding.apply`).
    members_per_call: members per compiled call; the last call is padded, so every call
      reuses one program.

  Returns:
    One SpectralDensity per member, equal (to float rounding) to `spectral_density` of the
    member's activation alone. A member with a non-finite loss or Fisher-vector product fails
    on its own: members share nothing but the batch, the parameters and the probes.
  """
  strategy = population.resolve_strategy(strategy)
  codes = np.asarray(codes, np.int32).reshape(-1, encoding.num_slots)
  images = jnp.asarray(images)
  labels = jnp.asarray(labels)
  num_steps, zero_rtol = _defaults(params, images.shape[0], num_steps, zero_rtol)
  program = _population_program(make_apply, encoding, normalize, strategy, num_steps,
                                int(num_probes), chunk_size, int(group_size))
  shared = (params, images, labels, jnp.asarray(seed % 2**32, jnp.uint32))
  n = codes.shape[0]
  devices = jax.device_count()
  group = min(max(members_per_call, 1), max(n, 1))
  group = -(-group // devices) * devices
  densities: list[SpectralDensity] = []
  for start in range(0, n, group):
    part = codes[start:start + group]
    padded = np.concatenate([part, np.repeat(part[-1:], group - len(part), axis=0)])
    losses, alphas, betas = jax.device_get(program(padded, *shared))
    densities += [_density(losses[m], alphas[m], betas[m], zero_rtol) for m in range(len(part))]
  return densities


def cdf_feature(nodes, weights, num_bins: int = 100) -> np.ndarray:
  """The density's CDF over the natural-log eigenvalues: float32 (num_bins,).

  Nodes <= 0 are dropped (their mass is `SpectralDensity.nonpositive_mass`); the logs of the
  rest, clipped to LOG_RANGE, are histogrammed with their weights into `num_bins` equal bins on
  LOG_RANGE, and the cumulative sum is normalized to end at 1. NaN if any node or weight is not
  finite (a failed density) or no positive mass remains.
  """
  nodes = np.asarray(nodes, np.float64).reshape(-1)
  weights = np.asarray(weights, np.float64).reshape(-1)
  if nodes.shape != weights.shape:
    raise ValueError(f"nodes {nodes.shape} and weights {weights.shape} differ in shape")
  if num_bins < 1:
    raise ValueError(f"num_bins must be positive, got {num_bins}")
  failed = np.full(num_bins, np.nan, np.float32)
  if not (np.all(np.isfinite(nodes)) and np.all(np.isfinite(weights))):
    return failed
  positive = nodes > 0
  if not np.sum(weights[positive]) > 0:
    return failed
  logs = np.clip(np.log(nodes[positive]), *LOG_RANGE)
  histogram, _ = np.histogram(logs, bins=num_bins, range=LOG_RANGE, weights=weights[positive])
  cdf = np.cumsum(histogram)
  return (cdf / cdf[-1]).astype(np.float32)


__all__ = ["LOG_RANGE", "SpectralDensity", "cdf_feature", "fisher_vector_product",
           "gauss_quadrature", "lanczos", "per_example_loss", "population_spectral_density",
           "rademacher_probe", "spectral_density"]
