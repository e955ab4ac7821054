"""K-FAC factors of one model or of a whole population, and their CDF features.

See the package docstring (`actbench.fisher`) for the definitions.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from actbench import models
from actbench.engine import caching, population
from actbench.fisher import capture, device_eigenvalues, spectrum
from actbench.fisher.capture import Layer, Uncovered

FISHER_TYPES = ("empirical", "sampled")


@dataclasses.dataclass(frozen=True)
class LayerFactors:
  """The K-FAC factors of one layer, host float64.

  A: (num_blocks, a_dim, a_dim), G: (num_blocks, g_dim, g_dim); the layer's Fisher block is
  block_diag over blocks of kron(A[b], G[b]) (one block for Dense and Conv layers, one per
  channel group for depthwise and grouped convolutions).
  """

  path: str
  kind: str
  A: np.ndarray  # pylint: disable=invalid-name
  G: np.ndarray  # pylint: disable=invalid-name
  num_weights: int
  has_bias: bool

  @property
  def num_blocks(self) -> int:
    return self.A.shape[0]


@dataclasses.dataclass
class FisherFeatures:
  """Fisher CDF features of a population.

  Attributes:
    names: the members' activations (decoded codes).
    features: (n, d) float32; a failed member's row is NaN.
    failed: member index -> why it has no features (non-finite forward or backward pass, or a
      layer without any log-eigenvalue in range).
    dropped: (n, num_layers) int64, non-positive eigenvalue products dropped per layer (-1
      where not computed).
    layers: the covered layers, in model order (the feature vector's order).
    uncovered: weights the approximation leaves out (BatchNorm, embeddings, ...).
    seconds: wall time of 'setup' (initialization, finding the layers), 'compile' (dispatching
      the compiled calls: tracing and compiling the program on its first use, about 0 once it
      is cached), 'device' (waiting for their results, eigenvalues included when computed on
      the device) and 'host' (eigendecompositions when computed there, and histograms; on
      accelerators these overlap with the next group's computation).
    cpu_seconds: the process's CPU seconds (all threads) in the same phases.
  """

  names: list[str]
  features: np.ndarray
  failed: dict[int, str]
  dropped: np.ndarray
  layers: list[Layer]
  uncovered: list[Uncovered]
  seconds: dict[str, float] = dataclasses.field(default_factory=dict)
  cpu_seconds: dict[str, float] = dataclasses.field(default_factory=dict)


class _Stopwatch:
  """Wall and CPU seconds (of the whole process, all threads) per phase.

  CPU time says how much of the machine a phase used: on a shared machine its wall time also
  counts the other processes' turns.
  """

  def __init__(self):
    self.wall = {"setup": 0.0, "compile": 0.0, "device": 0.0, "host": 0.0}
    self.cpu = dict(self.wall)
    self._last = (time.perf_counter(), time.process_time())

  def lap(self, phase: str | None):
    """Charges the time since the last lap to `phase` (None: to nothing)."""
    now = (time.perf_counter(), time.process_time())
    if phase is not None:
      self.wall[phase] += now[0] - self._last[0]
      self.cpu[phase] += now[1] - self._last[1]
    self._last = now


def _apply_kwargs(apply_kwargs: dict | None, model: nn.Module) -> dict:
  """Given ones, else inference mode (train=False) for models that take `train`."""
  if apply_kwargs is not None:
    return dict(apply_kwargs)
  return {"train": False} if models.takes_train(model) else {}


def _chunk_size(batch: int, batch_chunk: int | None) -> int:
  """The largest divisor of `batch` not above `batch_chunk` (the whole batch if None)."""
  if batch_chunk is None or batch_chunk >= batch:
    return batch
  if batch_chunk < 1:
    raise ValueError(f"batch_chunk must be positive, got {batch_chunk}")
  return max(d for d in range(1, batch_chunk + 1) if batch % d == 0)


def _noise(fisher_type: str, key, batch: int, num_classes: int) -> np.ndarray:
  """Gumbel noise for sampled labels, (batch, classes); zeros (batch, 1) for 'empirical'."""
  if fisher_type not in FISHER_TYPES:
    raise ValueError(f"fisher_type must be one of {FISHER_TYPES}, got {fisher_type!r}")
  if fisher_type == "empirical":
    return np.zeros((batch, 1), np.float32)
  if key is None:
    raise ValueError("fisher_type='sampled' needs a key (an int seed or a jax random key)")
  if isinstance(key, (int, np.integer)):
    key = jax.random.key(int(key), impl="rbg")
  return np.asarray(jax.random.gumbel(key, (batch, num_classes), jnp.float32))


def _chunked(array, chunk: int):
  array = np.asarray(array)
  return array.reshape((array.shape[0] // chunk, chunk) + array.shape[1:])


def _published_scales(layer: Layer, batch: int, rows: int) -> tuple[float, float]:
  """(scale of A, scale of G) that turn this module's factors into the published convention.

  The published features use a batch-MEAN loss, so every output gradient is 1/B of ours and
  the sums of g g^T are 1/B^2 of ours; and a Dense layer's sums are divided by its input width
  + 1 instead of by their count (B for A, B*T for G, T = rows per example, 1 for (B, d)
  inputs). Hence
    conv:  A * 1,              G / B^2                      (log-eigenvalues: -2 log B)
    dense: A * B / (d_in + 1), G * B*T / (B^2 (d_in + 1))   (for T = 1: -2 log(d_in + 1))
  """
  if layer.kind == "dense":
    width = layer.input_width + 1
    return batch / width, rows / (batch**2 * width)
  return 1.0, 1.0 / batch**2


def _scaled(layers: Sequence[Layer], rows: dict, batch: int, a_sums: dict, g_sums: dict,
            published_shift: bool, xp=np, dtype=np.float64) -> list[tuple[Any, Any]]:
  """[(A, G) per layer] from the sums of one model: A / B, G / (B * T), in `dtype` (host
  float64 by default; traced on the device with xp=jax.numpy)."""
  out = []
  for layer in layers:
    a = xp.asarray(a_sums[layer.path], dtype) / batch
    g = xp.asarray(g_sums[layer.path], dtype) / rows[layer.path]
    if published_shift:
      scale_a, scale_g = _published_scales(layer, batch, rows[layer.path])
      a, g = a * scale_a, g * scale_g
    out.append((a, g))
  return out


def _finish(layers: Sequence[Layer], rows: dict, batch: int, a_sums: dict, g_sums: dict,
            published_shift: bool) -> list[LayerFactors]:
  """Host factors (float64) from the device sums of one model."""
  return [LayerFactors(layer.path, layer.kind, a, g, layer.num_weights, layer.has_bias)
          for layer, (a, g) in zip(layers, _scaled(layers, rows, batch, a_sums, g_sums,
                                                    published_shift))]


def _total_rows(calls: Sequence[capture.Call], num_chunks: int) -> dict[str, int]:
  rows: dict[str, int] = {}
  for call in calls:
    rows[call.layer.path] = rows.get(call.layer.path, 0) + call.rows * num_chunks
  return rows


def find_layers(model: nn.Module, variables, images, *,
                apply_kwargs: dict | None = None) -> tuple[list[Layer], list[Uncovered]]:
  """The layers the Fisher approximation covers, and the weights it does not (traced only).

  images: an example batch (any batch size; only shapes are used).
  """
  calls, uncovered, _ = capture.trace_calls(model, variables, jnp.asarray(images),
                                            _apply_kwargs(apply_kwargs, model))
  return capture.layers_of(calls), uncovered


_SINGLE_PROGRAMS = caching.BoundedCache(16)


def _single_program(model, calls, fisher_type, apply_items):
  return _SINGLE_PROGRAMS.get(
      (model, tuple(calls), fisher_type, apply_items),
      lambda: jax.jit(functools.partial(capture.chunked_sums, model, calls=calls,
                                        fisher_type=fisher_type,
                                        apply_kwargs=dict(apply_items))))


def kfac_factors(model: nn.Module, variables, images, labels, *, fisher_type: str = "empirical",
                 key=None, batch_chunk: int | None = None, published_shift: bool = False,
                 apply_kwargs: dict | None = None) -> list[LayerFactors]:
  """K-FAC factors A and G of every covered layer of `model` on one batch, in model order.

  Args:
    model, variables: a Flax model and its variables, e.g. `model.init(...)`.
    images, labels: one batch (B, ...) and its integer labels (B,).
    fisher_type: 'empirical' (the batch's labels) or 'sampled' (labels drawn from the model's
      predictive distribution with `key`).
    key: for 'sampled': an int seed (rbg generator) or a jax random key.
    batch_chunk: examples per sub-batch (the largest divisor of B not above it); sums are
      accumulated over sub-batches, so memory is that of one sub-batch. None: one pass.
    published_shift: use the published benchmark files' scaling (see `_published_scales`).
    apply_kwargs: keyword arguments of `model.apply`; default {'train': False} (inference mode:
      no dropout, batch norm with its running statistics), as actbench.models take it.
  """
  apply_kwargs = _apply_kwargs(apply_kwargs, model)
  images = np.asarray(images)
  labels = np.asarray(labels)
  batch = images.shape[0]
  chunk = _chunk_size(batch, batch_chunk)
  calls, _, logits = capture.trace_calls(model, variables, jnp.asarray(images[:chunk]),
                                         apply_kwargs)
  noise = _noise(fisher_type, key, batch, logits.shape[-1])
  program = _single_program(model, tuple(calls), fisher_type, tuple(sorted(apply_kwargs.items())))
  a_parts, g_sums, _ = jax.device_get(program(variables, images=_chunked(images, chunk),
                                              labels=_chunked(labels, chunk),
                                              noise=_chunked(noise, chunk)))
  a_sums = capture.layer_input_moments(calls, a_parts, batch // chunk)
  return _finish(capture.layers_of(calls), _total_rows(calls, batch // chunk), batch, a_sums,
                 g_sums, published_shift)


def log_eigenvalues(factors: Sequence[LayerFactors], *, eigenvalue_floor: float = 0.0,
                    floor_mode: str = "drop") -> tuple[list[np.ndarray], np.ndarray]:
  """Per layer, every log a_i + log g_j over the eigenvalues of each block's A and G.

  Eigenvalues are computed with `eigh` in float64 on the host (`spectrum.eigenvalues_many`: one
  matrix per core). Products with a non-positive factor eigenvalue are dropped, and so are
  those with one below `eigenvalue_floor` times its factor's largest (`floor_mode` "drop");
  with "clamp", every eigenvalue below that floor, non-positive ones too, is raised to it and
  nothing is dropped. Returns
  (log-eigenvalues per layer, float64 arrays; the number dropped per layer, int64 array).

  Raises:
    ValueError: a factor is not finite.
  """
  for f in factors:
    for name, matrix in (("A", f.A), ("G", f.G)):
      if not np.all(np.isfinite(matrix)):
        raise ValueError(f"layer {f.path}: {name} is not finite")
  eigs = spectrum.eigenvalues_many([m for f in factors for m in (f.A, f.G)])
  return _log_spectra(eigs, eigenvalue_floor, floor_mode)


def _log_spectra(eigs: Sequence[np.ndarray], floor: float = 0.0,
                 mode: str = "drop") -> tuple[list[np.ndarray], np.ndarray]:
  """(log-eigenvalues per layer, dropped per layer) from eigenvalues [A_0, G_0, A_1, G_1, ...]."""
  values, dropped = [], []
  for a_eigs, g_eigs in zip(eigs[0::2], eigs[1::2]):
    v, d = spectrum.block_log_eigenvalues(a_eigs, g_eigs, floor, mode)
    values.append(v)
    dropped.append(d)
  return values, np.asarray(dropped, np.int64)


def cdf_features(log_eigs: Sequence[np.ndarray], num_weights: Sequence[int]) -> np.ndarray:
  """The CDF feature vector (float32) of per-layer log-eigenvalues: for each layer, a histogram
  on [-100, 100] with num_weights // 100 equally spaced edges (at least 2), cumulated and
  normalized to end at 1 (NaN if empty); layers concatenated in order."""
  return spectrum.cdf_features(log_eigs, num_weights)


# ---- populations ----


@functools.lru_cache(maxsize=8)
def _initializer(make_model, image_shape: tuple[int, ...], apply_items: tuple):
  @jax.jit
  def initialize(seed):
    # As in training (engine/trainer.py): parameters do not depend on the activation (built
    # with the identity), RBG keys (fast to compile on XLA:CPU), a one-image batch of zeros.
    model = make_model(lambda x: x)
    key = jax.random.key(seed, impl="rbg")
    sample = jnp.zeros((1,) + image_shape, jnp.float32)
    return model.init({"params": key, "dropout": key}, sample, **dict(apply_items))
  return initialize


def init_variables(make_model: Callable, image_shape: Sequence[int], seed: int = 0,
                   apply_kwargs: dict | None = None):
  """The variables every population member starts from (the same as training's for this seed
  when `make_model(act)` builds the config's model)."""
  items = tuple(sorted(_apply_kwargs(apply_kwargs, make_model(lambda x: x)).items()))
  return _initializer(make_model, tuple(image_shape), items)(np.int32(seed))


_POPULATION_PROGRAMS = caching.BoundedCache(8)


def _population_program(make_model, encoding, calls, fisher_type, strategy, normalize,
                        apply_items, group_size):
  key = (make_model, encoding, calls, fisher_type, strategy, normalize, apply_items,
         group_size, jax.device_count())
  return _POPULATION_PROGRAMS.get(key, lambda: _build_population_program(*key[:-1]))


def _build_population_program(make_model, encoding, calls, fisher_type, strategy, normalize,
                              apply_items, group_size):
  def member(codes, variables, images, labels, noise, present=None):
    model = make_model(encoding.activation(codes, normalize, present))
    return capture.chunked_sums(model, variables, calls, images, labels, noise, fisher_type,
                                dict(apply_items))

  return population.sharded_member_program(member, strategy, num_shared=4, encoding=encoding,
                                           group_size=group_size)


def _member_factors(calls, num_chunks, layers, rows, batch, a_parts, g_sums, finite,
                    published_shift):
  """(host factors, None) of one member's sums, or (None, why it has no features)."""
  if not finite:
    return None, _NOT_FINITE
  a_sums = capture.layer_input_moments(calls, a_parts, num_chunks)
  for name, sums in (("A", a_sums), ("G", g_sums)):
    bad = [layer.path for layer in layers if not np.all(np.isfinite(sums[layer.path]))]
    if bad:
      return None, _not_finite_factors(name, bad)
  return _finish(layers, rows, batch, a_sums, g_sums, published_shift), None


_NOT_FINITE = "forward pass is not finite (NaN or inf logits)"


def _not_finite_factors(name: str, paths: Sequence[str]) -> str:
  pass_name = "forward" if name == "A" else "backward"
  return f"{pass_name} pass is not finite: non-finite {name} in {', '.join(paths)}"


def _member_features(layers, eigs, floor: float, mode: str):
  """(feature vector or None, reason or None, dropped per layer) of one member's eigenvalues
  [A_0, G_0, A_1, G_1, ...]."""
  log_eigs, dropped = _log_spectra(eigs, floor, mode)
  vector = cdf_features(log_eigs, [layer.num_weights for layer in layers])
  if np.isnan(vector).any():
    empty = [layer.path for layer, v in zip(layers, log_eigs)
             if not np.any((v >= spectrum.LOG_RANGE[0]) & (v <= spectrum.LOG_RANGE[1]))]
    return None, f"no log-eigenvalue in [-100, 100] in {', '.join(empty)}", dropped
  return vector, None, dropped


def population_features(make_model: Callable[[Callable], nn.Module], encoding: Any, codes,
                        images, labels, *, seed: int = 0, fisher_type: str = "empirical",
                        key=None, batch_chunk: int | None = 32, members_per_call: int = 16,
                        strategy: str = "auto",
                        group_size: int = population.DEFAULT_GROUP_SIZE,
                        published_shift: bool = False,
                        normalize: bool = False, eigenvalue_floor: float = 0.0,
                        floor_mode: str = "drop", eigenvalues: str = "host",
                        apply_kwargs: dict | None = None) -> FisherFeatures:
  """Fisher CDF features of many activations, their factors computed in one compiled program.

  Args:
    make_model: builds the model for an activation (a function of x), e.g.
      `model_factory.from_config(config, num_classes)`.
    encoding, codes: the population form (`population.Encoding` or `FunctionTable`) and the
      members' codes (n, num_slots).
    images, labels: one batch (B, ...) and its integer labels.
    seed: initialization seed; every member starts from the same parameters (`init_variables`).
    fisher_type, key, batch_chunk, published_shift, apply_kwargs: as in `kfac_factors`.
    members_per_call: members per compiled call (bounds the memory of the factors; the last
      group is padded, so every call reuses one program).
    strategy, group_size: how members run (`population.resolve_strategy`): 'map' (lax.map
      over members; only each member's operators run; CPU), 'vmap', 'grouped' (vmap within
      groups of group_size) or 'auto'. The member axis is sharded over the local devices.
    normalize: members use (f - E f) / std f (see `Encoding.apply`).
    eigenvalue_floor, floor_mode: factor eigenvalues below this fraction of their factor's
      largest are dropped (counted in `dropped`) or clamped to it, so that the positions of
      roundoff-level eigenvalues do not shape the features (see `log_eigenvalues`).
    eigenvalues: where the factors' eigenvalues are computed (`device_eigenvalues`): 'host'
      (float64 on the host, a group's all at once, one per core: `spectrum.eigenvalues_many`),
      'device' (float64) or 'device_float32' (on the device, after each group's program).

  The histograms run on the host, member by member. A member whose factors are not finite gets
  a NaN row and a reason in `failed`; the others are unaffected (members share nothing but the
  batch and the initial parameters).
  """
  device_eigenvalues.check_mode(eigenvalues)
  clock = _Stopwatch()
  codes = np.asarray(codes, np.int32).reshape(-1, encoding.num_slots)
  setup = _setup_population(
      make_model, encoding, images, labels, seed=seed, fisher_type=fisher_type, key=key,
      batch_chunk=batch_chunk, strategy=population.resolve_strategy(strategy),
      group_size=int(group_size), normalize=normalize, published_shift=published_shift,
      eigenvalues=eigenvalues, apply_kwargs=apply_kwargs)
  n = codes.shape[0]
  devices = jax.device_count()
  group = min(max(members_per_call, 1), max(n, 1))
  group = -(-group // devices) * devices
  width = spectrum.feature_length([layer.num_weights for layer in setup.layers])
  features = np.full((n, width), np.nan, np.float32)
  dropped = np.full((n, len(setup.layers)), -1, np.int64)
  failed: dict[int, str] = {}
  clock.lap("setup")
  for start, results in _computed_groups(setup, codes, group, clock):
    for m, (eigs, reason) in enumerate(setup.eigenvalues(min(group, n - start), results)):
      if eigs is None:
        failed[start + m] = reason
        continue
      vector, reason, counts = _member_features(setup.layers, eigs, eigenvalue_floor,
                                                floor_mode)
      dropped[start + m] = counts
      if vector is None:
        failed[start + m] = reason
      else:
        features[start + m] = vector
    clock.lap("host")
    del results  # the group's sums leave the host before the next group's arrive
  return FisherFeatures(list(encoding.decode(codes)) if n else [], features, failed, dropped,
                        setup.layers, setup.uncovered, clock.wall, clock.cpu)


@dataclasses.dataclass(frozen=True)
class _PopulationSetup:
  """What every group of a population's members shares: the covered layers, the compiled
  programs and their shared arguments."""

  calls: tuple[capture.Call, ...]
  layers: list[Layer]
  uncovered: list[Uncovered]
  rows: dict[str, int]  # per layer: the rows its factors average over
  batch: int
  num_chunks: int
  published_shift: bool
  program: Callable  # codes, *shared -> (a_parts, g_sums, finite)
  shared: tuple  # variables, images, labels, noise (chunked)
  decompose: Callable | None  # the device eigenvalue program; None: on the host

  def dispatch(self, codes):
    """Starts the group's computation (on a program's first use, its compilation) and returns
    before it ends."""
    a_parts, g_sums, finite = self.program(codes, *self.shared)
    if self.decompose is None:
      return a_parts, g_sums, finite
    return self.decompose(a_parts, g_sums), finite

  def eigenvalues(self, count, results) -> list[tuple[list | None, str | None]]:
    """Per member of a group: (eigenvalues [A_0, G_0, A_1, G_1, ...] or None, why not)."""
    if self.decompose is None:
      return _host_eigenvalues(self.calls, self.num_chunks, self.layers, self.rows,
                               self.batch, self.published_shift, count, *results)
    return _eigenvalues_from_device(self.layers, count, *results)


def _setup_population(make_model, encoding, images, labels, *, seed, fisher_type, key,
                      batch_chunk, strategy, group_size, normalize, published_shift,
                      eigenvalues, apply_kwargs) -> _PopulationSetup:
  apply_kwargs = _apply_kwargs(apply_kwargs, make_model(lambda x: x))
  images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
  batch = images.shape[0]
  chunk = _chunk_size(batch, batch_chunk)
  variables = init_variables(make_model, images.shape[1:], seed, apply_kwargs)
  calls, uncovered, logits = capture.trace_calls(make_model(lambda x: x), variables,
                                                 jnp.asarray(images[:chunk]), apply_kwargs)
  calls = tuple(calls)
  layers = capture.layers_of(list(calls))
  rows = _total_rows(calls, batch // chunk)
  noise = _noise(fisher_type, key, batch, logits.shape[-1])
  program = _population_program(make_model, encoding, calls, fisher_type, strategy, normalize,
                                tuple(sorted(apply_kwargs.items())), group_size)
  decompose = None
  if eigenvalues != "host":
    decompose = _factor_eigenvalue_program(calls, layers, rows, batch, batch // chunk,
                                           published_shift, eigenvalues)
  return _PopulationSetup(
      calls, layers, uncovered, rows, batch, batch // chunk, published_shift, program,
      (variables, _chunked(images, chunk), _chunked(labels, chunk), _chunked(noise, chunk)),
      decompose)


def _computed_groups(setup: _PopulationSetup, codes: np.ndarray, group: int, clock):
  """(first member, the group's results on the host) for each group of `group` members, in
  order; the last group is padded, so that every call reuses one program."""
  def launch(start):
    part = codes[start:start + group]
    clock.lap(None)
    pending = setup.dispatch(np.concatenate(
        [part, np.repeat(part[-1:], group - len(part), axis=0)]))
    clock.lap("compile")
    return pending

  # On accelerators the next group computes while the host decomposes this one; on CPU the
  # two would compete for the same cores (measured: 1.5x slower in all), so they alternate.
  overlap = jax.default_backend() != "cpu"
  starts = list(range(0, codes.shape[0], group))
  pending = launch(0) if starts else None
  for index, start in enumerate(starts):
    clock.lap(None)
    results = jax.device_get(pending)
    clock.lap("device")
    last = index + 1 == len(starts)
    if overlap and not last:
      pending = launch(starts[index + 1])  # computes while the host decomposes this group
    yield start, results
    del results
    if not overlap and not last:
      pending = launch(starts[index + 1])


def _host_eigenvalues(calls, num_chunks, layers, rows, batch, published_shift, count, a_parts,
                      g_sums, finite) -> list[tuple[list | None, str | None]]:
  """Per member of a group: (eigenvalues [A_0, G_0, A_1, G_1, ...] or None, why not), from
  its sums on the host, all the group's decompositions at once."""
  healthy, out = {}, [(None, None)] * count
  for m in range(count):
    factors, reason = _member_factors(
        calls, num_chunks, layers, rows, batch, jax.tree.map(lambda v, m=m: v[m], a_parts),
        {p: v[m] for p, v in g_sums.items()}, bool(finite[m]), published_shift)
    if factors is None:
      out[m] = (None, reason)
    else:
      healthy[m] = factors
  # All at once, so that every core has work until the end.
  eigs = spectrum.eigenvalues_many([matrix for factors in healthy.values()
                                    for f in factors for matrix in (f.A, f.G)])
  per_member = 2 * len(layers)
  for position, m in enumerate(healthy):
    out[m] = (eigs[position * per_member:(position + 1) * per_member], None)
  return out


def _eigenvalues_from_device(layers, count, decomposed,
                             finite) -> list[tuple[list | None, str | None]]:
  """As `_host_eigenvalues`, from the device's eigenvalues and factor finiteness."""
  eigs, factor_finite = decomposed
  out = []
  for m in range(count):
    if not finite[m]:
      out.append((None, _NOT_FINITE))
      continue
    bad_a = [layer.path for i, layer in enumerate(layers) if not factor_finite[m, 2 * i]]
    bad_g = [layer.path for i, layer in enumerate(layers) if not factor_finite[m, 2 * i + 1]]
    if bad_a or bad_g:
      out.append((None, _not_finite_factors("A", bad_a) if bad_a
                  else _not_finite_factors("G", bad_g)))
      continue
    out.append(([np.asarray(e[m], np.float64) for e in eigs], None))
  return out


def _factor_eigenvalue_program(calls, layers, rows, batch, num_chunks, published_shift, mode):
  """The device program of every member's factor eigenvalues [A_0, G_0, ...] from the
  population program's (a_parts, g_sums)."""
  def member_matrices(a_parts, g_sums, dtype):
    a_sums = capture.layer_input_moments(calls, a_parts, num_chunks, jnp, dtype)
    return [matrix for pair in _scaled(layers, rows, batch, a_sums, g_sums, published_shift,
                                        jnp, dtype) for matrix in pair]

  key = ("kfac", calls, tuple(layers), tuple(sorted(rows.items())), batch, num_chunks,
         published_shift)
  return device_eigenvalues.eigenvalue_program(member_matrices, mode, key)
