"""Eigenvalues of every population member's K-FAC factors on the device.

`population_features(eigenvalues=...)` (`config.fisher.eigenvalues`) chooses where the
factors' eigenvalues are computed:

  host            float64 LAPACK on the host's cores (`spectrum.eigenvalues_many`), from
                  factors copied off the device; on accelerators this overlaps the next group's
                  program. The default.
  device          float64 on the device (`jnp.linalg.eigvalsh` under `jax.enable_x64`): only
                  the eigenvalues come back, not the factors (tens of MB per member). For GPUs
                  whose host has few cores. The features differ from the host's by less than
                  the host's own roundoff.
  device_float32  float32 on the device, for chips without native float64 (TPUs).
                  Eigenvalues below about 1e-7 of their factor's largest are then roundoff, so
                  the features move.

`python -m bench.fisher_precision` measures how far, what that does to the surrogate, and the
seconds per function of each.

The program here follows the population program: it takes the members' sums where that
program left them (sharded over the devices along the member axis) and is dispatched right
after it, so the device goes on from one to the other while the host finishes the previous
group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable

import jax
import jax.numpy as jnp

from actbench.engine import caching, population

MODES = ("host", "device", "device_float32")

_PROGRAMS = caching.BoundedCache(8)


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f"eigenvalues must be one of {MODES} (where the Fisher factors' "
                     f"eigenvalues are computed), got {mode!r}")


def eigenvalue_program(member_matrices: Callable, mode: str, key: Hashable) -> Callable:
  """`program(*member_args)` -> (eigenvalues, finite) for every member on the leading axis.

  member_matrices(*one_member_args, dtype) -> a list of symmetric matrix stacks (blocks, d, d)
  of one member, computed in `dtype` (traced). The program returns, for the k-th stack, its
  eigenvalues (members, blocks, d) in ascending order, and finite (members, num_stacks): whether
  the stack was finite. A non-finite stack is decomposed as zeros, so that one member's NaN
  cannot reach another's eigensolver or stall it. `key` names `member_matrices` for the cache.
  """
  check_mode(mode)
  if mode == "host":
    raise ValueError("eigenvalue_program is for the device modes; 'host' uses "
                     "spectrum.eigenvalues_many")
  return _PROGRAMS.get((key, mode, jax.device_count()),
                       lambda: _build_program(member_matrices, mode))


def _build_program(member_matrices: Callable, mode: str) -> Callable:
  dtype = jnp.float64 if mode == "device" else jnp.float32

  def one_member(*args):
    eigs, finite = [], []
    for matrices in member_matrices(*args, dtype):
      ok = jnp.all(jnp.isfinite(matrices))
      matrices = jnp.where(ok, matrices, jnp.zeros((), dtype))
      if eigs:
        # One decomposition after the other. On XLA:CPU each batched eigh splits its batch
        # over the intra-op thread pool and waits for it from inside that pool: two running at
        # once on a 2-core machine waited for each other forever (jaxlib 0.10). XLA:CPU orders
        # its work by the buffers it reads, so the order has to be a data dependency (an
        # optimization barrier is not one there); zero times a finite number adds nothing.
        matrices = matrices + jnp.zeros((), dtype) * jnp.nan_to_num(eigs[-1][..., 0].sum())
      eigs.append(jnp.linalg.eigvalsh(matrices))
      finite.append(ok)
    return eigs, jnp.stack(finite)

  # Every argument is per member: they travel together as one pytree of member arguments.
  sharded = population.sharded_member_program(lambda args: one_member(*args), "vmap",
                                              num_shared=0)

  def program(*args):
    # Traced and run with 64-bit types for 'device' only: jit caches a program per setting.
    with jax.enable_x64(True) if mode == "device" else contextlib.nullcontext():
      return sharded(args)

  return program
