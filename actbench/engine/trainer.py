"""The compiled program that trains one population: many candidate activations (x seeds) at once.

A population member is an (activation, seed) pair. All members see the same batches; each has
its own parameters, batch-norm statistics, optimizer state and dropout stream, and its
activation is data (population codes, see population.py), so one program trains them all:

  strategy 'map'   lax.map over the members: only each member's own operators run. Fastest on
                   CPU, where vmap would evaluate every operator of the search space.
  strategy 'vmap'  vmap over the members: one wide program, best on accelerators.
  strategy 'grouped'  vmap within groups of members sorted by their codes, lax.map over the
                   groups; only the operators a group selects run (population.over_members).
  strategy 'auto'  'map' on CPU, 'vmap' elsewhere.

The population axis is sharded over every device (of every host, after jax.distributed) with
shard_map: each device trains its own members and nothing is communicated. A member whose loss
or parameters stop being finite stops updating and is marked diverged, keeping its last finite
state; no other member is affected, because members share nothing but the input batch.

`train.py` drives it: population grouping, epochs, checkpoints and results.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from actbench.engine import data as data_lib
from actbench.engine import caching, objectives, optim, population
from actbench.engine import model_factory
from actbench.errors import ConfigError

resolve_strategy = population.resolve_strategy
_AXIS = "population"


def _tree_where(condition, new, old):
  return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


def _all_finite(tree) -> jax.Array:
  """Whether every float in `tree` is finite. On CPU, one reduction over the concatenated
  leaves: a reduction per leaf made XLA:CPU compile a MobileViTv2 population program 2x
  slower. Elsewhere a reduction per leaf, which copies nothing."""
  leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  if not leaves:
    return jnp.array(True)
  if jax.default_backend() == "cpu":
    return jnp.all(jnp.isfinite(jnp.concatenate([jnp.ravel(leaf) for leaf in leaves])))
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


class PopulationTrainer:
  """Compiled training and evaluation of one population (one schema) on one dataset."""

  def __init__(self, config, dataset: data_lib.Dataset, encoding: population.Encoding,
               make_model=None):
    # A frozen copy: later changes to the caller's config cannot leak into traced code.
    self.config = ml_collections.FrozenConfigDict(config)
    self.dataset = dataset
    self.encoding = encoding
    self.make_model = model_factory.from_config(config, dataset.info.num_classes, make_model)
    options = population.program_options(config)
    self.strategy = resolve_strategy(options["strategy"])
    self.group_size, self.normalize = options["group_size"], options["normalize"]
    train_cfg = config.train
    objectives.check(train_cfg)
    self.training_loss = objectives.training_loss(train_cfg)
    self.evaluation_loss = objectives.evaluation_loss(train_cfg)
    self.batch_size = int(train_cfg.batch_size)
    self.steps_per_epoch = dataset.train.num_batches(self.batch_size)
    if self.steps_per_epoch == 0:
      raise ConfigError(f"config.train.batch_size {self.batch_size} is larger than the training "
                        f"split ({dataset.train.num_examples} examples)")
    self.optimizer = optim.make_optimizer(train_cfg, self.steps_per_epoch)
    self.mesh = jax.make_mesh((jax.device_count(),), (_AXIS,))
    self.member_sharding = jax.NamedSharding(self.mesh, jax.P(_AXIS))
    self.replicated = jax.NamedSharding(self.mesh, jax.P())
    self._train_chunk = jax.jit(self._sharded(self._train_members, num_member_args=3,
                                              num_shared_args=3))
    self._evaluate = jax.jit(self._sharded(self._evaluate_members, num_member_args=2,
                                           num_shared_args=3))

  # ---- per-member functions (one member; mapped or vmapped over the local members) ----

  def _model(self, codes, present=None):
    return self.make_model(self.encoding.activation(codes, self.normalize, present))

  def _train_member(self, state, codes, seed, images, targets, steps, present=None):
    model = self._model(codes, present)
    dropout_root = jax.random.fold_in(jax.random.PRNGKey(1), seed)

    def loss_fn(params, batch_stats, x, y, key):
      variables = {"params": params}
      if batch_stats:
        variables["batch_stats"] = batch_stats
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                      rngs={"dropout": key})
        batch_stats = updates["batch_stats"]
      else:
        logits = model.apply(variables, x, train=True, rngs={"dropout": key})
      loss = jnp.mean(self.training_loss(logits, y))
      return loss, (logits, batch_stats)

    def step(carry, inputs):
      state, totals = carry
      x, y, step_index = inputs
      key = jax.random.fold_in(dropout_root, step_index)
      (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state["params"], state["batch_stats"], x, y, key)
      updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
      params = optax.apply_updates(state["params"], updates)
      new = {"params": params, "batch_stats": batch_stats, "opt_state": opt_state,
             "diverged": state["diverged"]}
      finite = jnp.isfinite(loss) & _all_finite((params, batch_stats))
      healthy = finite & ~state["diverged"]
      state = _tree_where(healthy, new, state)
      state["diverged"] = state["diverged"] | ~finite
      # Against the largest target weight: the label, or the dominant one of a mixed pair.
      correct = jnp.sum(jnp.argmax(logits, -1) == jnp.argmax(y, -1))
      totals = {"loss": totals["loss"] + jnp.where(healthy, loss * y.shape[0], 0.0),
                "correct": totals["correct"] + jnp.where(healthy, correct, 0),
                "count": totals["count"] + jnp.where(healthy, y.shape[0], 0)}
      return (state, totals), None

    zeros = {"loss": jnp.float32(0), "correct": jnp.int32(0), "count": jnp.int32(0)}
    (state, totals), _ = jax.lax.scan(step, (state, zeros), (images, targets, steps))
    return state, totals

  def _evaluate_member(self, state, codes, images, labels, mask, present=None):
    model = self._model(codes, present)
    variables = {"params": state["params"]}
    if state["batch_stats"]:
      variables["batch_stats"] = state["batch_stats"]

    def batch_totals(totals, inputs):
      x, y, m = inputs
      logits = model.apply(variables, x, train=False)
      targets = jax.nn.one_hot(y, logits.shape[-1], dtype=jnp.float32)
      loss = jnp.sum(jnp.where(m, self.evaluation_loss(logits, targets), 0.0))
      correct = jnp.sum((jnp.argmax(logits, -1) == y) & m)
      return {"loss": totals["loss"] + loss, "correct": totals["correct"] + correct,
              "count": totals["count"] + jnp.sum(m)}, None

    zeros = {"loss": jnp.float32(0), "correct": jnp.int32(0), "count": jnp.int32(0)}
    totals, _ = jax.lax.scan(batch_totals, zeros, (images, labels, mask))
    return totals

  # ---- population plumbing ----

  def _over_members(self, fn, member_args, shared_args):
    """Applies fn(*member, *shared) to every local member (member_args: state, codes, ...)."""
    return population.over_members(fn, member_args, shared_args, self.strategy,
                                   encoding=self.encoding, codes_at=1,
                                   group_size=self.group_size)

  def _train_members(self, state, codes, seeds, images, labels, first_step):
    count = images.shape[0]
    steps = first_step + jnp.arange(count)
    data_key = jax.random.PRNGKey(int(self.config.seed))
    # Augmentation is shared by the members: computed once per step, outside the member loop.
    keys = jax.vmap(lambda s: jax.random.fold_in(data_key, s))(steps)
    images, targets = jax.vmap(functools.partial(
        objectives.training_batch, self.config.train, self.dataset))(keys, images, labels)
    return self._over_members(self._train_member, (state, codes, seeds),
                              (images, targets, steps))

  def _evaluate_members(self, state, codes, images, labels, mask):
    images = jax.vmap(functools.partial(objectives.evaluation_inputs, self.config.train,
                                        self.dataset))(images)
    return self._over_members(self._evaluate_member, (state, codes), (images, labels, mask))

  def _sharded(self, fn, num_member_args: int, num_shared_args: int):
    in_specs = (jax.P(_AXIS),) * num_member_args + (jax.P(),) * num_shared_args
    return jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=jax.P(_AXIS),
                         check_vma=False)

  def put_members(self, array: np.ndarray) -> jax.Array:
    return _global_array(np.asarray(array), self.member_sharding)

  def put_shared(self, array: np.ndarray) -> jax.Array:
    return _global_array(np.asarray(array), self.replicated)

  def train_program(self):
    """The jitted training chunk, (state, codes, seeds, images, labels, first_step) ->
    (state, totals): for benchmarks that compile it ahead of time and analyse it."""
    return self._train_chunk

  def init(self, seeds: Sequence[int]):
    """Initial state of every member (parameters, batch statistics, optimizer state).

    Members initialize one at a time with a program that depends on neither the activations
    nor the population size, so it compiles once per model and optimizer."""
    initialize = _cached_initializer(self.make_model,
                                     self.config.train.to_json_best_effort(sort_keys=True),
                                     tuple(self.dataset.info.input_shape), self.steps_per_epoch)
    states = [initialize(np.int32(seed)) for seed in seeds]
    return jax.tree.map(lambda *leaves: self.put_members(np.stack(leaves)), *states)

  def train_epoch(self, state, codes, seeds, epoch: int):
    """One epoch; returns (state, totals per member as host numpy)."""
    rows = self.dataset.train.batch_indices(self.batch_size, seed=int(self.config.seed),
                                            epoch=epoch)
    per_call = int(self.config.train.steps_per_call) or len(rows)
    totals = None
    for start in range(0, len(rows), per_call):
      chunk = rows[start:start + per_call]
      batch = self.dataset.train.gather(chunk.reshape(-1))
      images = batch["image"].reshape(chunk.shape + batch["image"].shape[1:])
      labels = batch["label"].reshape(chunk.shape)
      first_step = np.int32(epoch * self.steps_per_epoch + start)
      # Dispatch is asynchronous: the host gathers the next chunk while this one trains.
      state, chunk_totals = self._train_chunk(state, codes, seeds, self.put_shared(images),
                                              self.put_shared(labels), self.put_shared(first_step))
      totals = chunk_totals if totals is None else jax.tree.map(jnp.add, totals, chunk_totals)
    return state, to_host(totals)

  def evaluate(self, state, codes, split: data_lib.Split) -> dict[str, np.ndarray]:
    """Loss and accuracy of every member on a split: host numpy arrays."""
    batch_size = int(self.config.train.eval_batch_size) or self.batch_size
    batches = list(split.eval_batches(batch_size))
    per_call = int(self.config.train.eval_batches_per_call) or len(batches)
    # Fully masked batches pad every call to the same length: one compiled program serves
    # every split and every call.
    batches += [{"image": np.zeros_like(batches[0]["image"]),
                 "label": np.zeros_like(batches[0]["label"]),
                 "mask": np.zeros_like(batches[0]["mask"])}] * (-len(batches) % per_call)
    totals = None
    for start in range(0, len(batches), per_call):
      group = batches[start:start + per_call]
      stacked = {k: np.stack([b[k] for b in group]) for k in ("image", "label", "mask")}
      chunk_totals = self._evaluate(state, codes, self.put_shared(stacked["image"]),
                                    self.put_shared(stacked["label"]),
                                    self.put_shared(stacked["mask"]))
      totals = chunk_totals if totals is None else jax.tree.map(jnp.add, totals, chunk_totals)
    return loss_and_accuracy(to_host(totals))


@functools.lru_cache(maxsize=8)
def _cached_initializer(make_model, train_json: str, input_shape: tuple[int, ...],
                        steps_per_epoch: int):
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(json.loads(train_json)),
                                   steps_per_epoch)

  @jax.jit
  def initialize(seed):
    # Parameters do not depend on the activation: every member initializes with the identity.
    # XLA:CPU compiles the RBG generator several times faster than threefry; this program runs
    # one member at a time, so its values do not depend on the strategy or the devices.
    model = make_model(lambda x: x)
    key = jax.random.key(seed, impl="rbg")
    sample = jnp.zeros((1,) + input_shape, jnp.float32)
    variables = model.init({"params": key, "dropout": key}, sample, train=False)
    params = variables["params"]
    return {"params": params, "batch_stats": variables.get("batch_stats", {}),
            "opt_state": optimizer.init(params), "diverged": jnp.array(False)}

  return initialize


_TRAINERS = caching.BoundedCache(8)


def cached_trainer(config, dataset: data_lib.Dataset, encoding: population.Encoding,
                   make_model=None):
  """A cached trainer: populations of the same space, config, dataset and model (a search
  trains many) reuse its compiled programs."""
  make_model = model_factory.from_config(config, dataset.info.num_classes, make_model)
  # The trainer holds the dataset, so no other dataset can take its id while it is kept.
  key = (config.to_json_best_effort(sort_keys=True), id(dataset), encoding, make_model,
         jax.device_count())
  return _TRAINERS.get(key, lambda: PopulationTrainer(config, dataset, encoding, make_model))


def _global_array(array: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array from a host array every process holds in full (works on many hosts)."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(tree):
  if jax.process_count() > 1:
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
  return jax.tree.map(np.asarray, tree)


def loss_and_accuracy(totals) -> dict[str, np.ndarray]:
  count = np.maximum(totals["count"], 1)
  loss = np.where(totals["count"] > 0, totals["loss"] / count, np.nan)
  # Accuracy of non-finite logits means nothing: it is missing wherever the loss is.
  return {"loss": loss, "accuracy": np.where(np.isfinite(loss), totals["correct"] / count, np.nan)}
