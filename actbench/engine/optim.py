"""Optimizers and learning-rate schedules from a config section, built with optax.

The fields of `config.train` read here (all documented in the configs):

  optimizer        'sgd' (momentum, optionally nesterov), 'adam' or 'adamw'.
  learning_rate    peak learning rate.
  momentum, nesterov   for sgd.
  weight_decay     for sgd and adam: L2 added to the gradient (the published CIFAR recipes);
                   for adamw: decoupled decay, multiplied by the learning rate as optax does.
  weight_decay_on  'all' parameters, or 'kernels' only (no decay on biases and norm scales).
  schedule         'constant', 'cosine' or 'linear' (to end_learning_rate), or 'step' (times
                   decay_factor at each epoch in decay_epochs).
  warmup_epochs    linear warm-up from warmup_learning_rate, then the schedule.
  grad_clip_norm   clip the global gradient norm (0: no clipping).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from actbench.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear", "step")


def learning_rate_schedule(cfg, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate as a function of the step, warm-up included."""
  peak = float(cfg.learning_rate)
  total = int(cfg.num_epochs * steps_per_epoch)
  warmup = int(cfg.warmup_epochs * steps_per_epoch)
  kind = cfg.schedule
  if kind == "constant":
    main = optax.constant_schedule(peak)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(
        peak, max(total - warmup, 1), alpha=float(cfg.end_learning_rate) / peak)
  elif kind == "linear":
    main = optax.linear_schedule(peak, float(cfg.end_learning_rate), max(total - warmup, 1))
  elif kind == "step":
    boundaries = {int(epoch * steps_per_epoch) - warmup: float(cfg.decay_factor)
                  for epoch in cfg.decay_epochs}
    main = optax.piecewise_constant_schedule(peak, boundaries)
  else:
    raise ConfigError(f"config.train.schedule must be one of {SCHEDULES}, got {kind!r}")
  if warmup <= 0:
    return main
  start = float(cfg.warmup_learning_rate)
  return optax.join_schedules([optax.linear_schedule(start, peak, warmup), main], [warmup])


def _kernels_only(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def global_norm(tree) -> jax.Array:
  """The l2 norm of all leaves together. On CPU one reduction over their concatenation: a
  reduction per leaf (optax.tree.norm) compiles several times slower on XLA:CPU inside a
  population program. Elsewhere optax's, which copies nothing."""
  leaves = jax.tree.leaves(tree)
  if jax.default_backend() != "cpu" or not leaves:
    return optax.tree.norm(tree)
  flat = jnp.concatenate([jnp.ravel(leaf).astype(jnp.float32) for leaf in leaves])
  return jnp.sqrt(jnp.sum(jnp.square(flat)))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """optax.clip_by_global_norm with `global_norm` above: updates scaled to norm <= max_norm."""
  def update(updates, state, params=None):
    del params
    norm = global_norm(updates)
    scale = jnp.where(norm < max_norm, 1.0, max_norm / jnp.maximum(norm, 1e-30))
    return jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(cfg, steps_per_epoch: int) -> optax.GradientTransformation:
  """The optimizer of `config.train` (see the module docstring for the fields)."""
  name = cfg.optimizer
  if name not in OPTIMIZERS:
    raise ConfigError(f"config.train.optimizer must be one of {OPTIMIZERS}, got {name!r}")
  schedule = learning_rate_schedule(cfg, steps_per_epoch)
  decay = float(cfg.weight_decay)
  decay_on = cfg.weight_decay_on
  if decay_on not in ("all", "kernels"):
    raise ConfigError(f"config.train.weight_decay_on must be 'all' or 'kernels', got "
                      f"{decay_on!r}")
  mask = None if decay_on == "all" else _kernels_only
  chain = []
  clip = float(cfg.grad_clip_norm)
  if clip > 0:
    chain.append(clip_by_global_norm(clip))
  if name == "adamw":
    chain.append(optax.adamw(schedule, weight_decay=decay, mask=mask))
  else:
    if decay > 0:
      chain.append(optax.add_decayed_weights(decay, mask=mask))
    if name == "sgd":
      chain.append(optax.sgd(schedule, momentum=float(cfg.momentum) or None,
                             nesterov=bool(cfg.nesterov)))
    else:
      chain.append(optax.adam(schedule))
  return optax.chain(*chain)
