"""Population training: many candidate activations (x seeds) train in one compiled program.

A population member is an (activation, seed) pair. All members see the same batches; each has
its own parameters, batch-norm statistics, optimizer state and dropout stream, and its
activation is data (population codes, see population.py), so one program trains them all:

  strategy 'map'   lax.map over the members: only each member's own operators run. Fastest on
                   CPU, where vmap would evaluate every operator of the search space.
  strategy 'vmap'  vmap over the members: one wide program, best on accelerators.
  strategy 'auto'  'map' on CPU, 'vmap' elsewhere.

The population axis is sharded over every device (of every host, after jax.distributed) with
shard_map: each device trains its own members and nothing is communicated. A member whose loss
or parameters stop being finite stops updating and is marked diverged, keeping its last finite
state; no other member is affected, because members share nothing but the input batch.

Training is checkpointed with Orbax every epoch when a workdir is given, and a restarted run
resumes from the last checkpoint with the same result as an uninterrupted run (batches,
augmentation and dropout are pure functions of the seed and the step).

    from actbench import train
    from configs import quickstart
    result = train.train_population(quickstart.get_config(), ["relu(x)", "swish(x)"], [0, 1])
    result.by_activation()["relu(x)"]["validation_accuracy"]
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from actbench import data as data_lib
from actbench import models, objectives, optim, population
from actbench.expression import parse

STRATEGIES = population.STRATEGIES
resolve_strategy = population.resolve_strategy
_AXIS = "population"


def _dtype(name: str):
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
  if name not in dtypes:
    raise ValueError(f"config.model.dtype must be one of {sorted(dtypes)}, got {name!r}")
  return dtypes[name]


def build_model(config, act, num_classes: int):
  """The model of `config.model` with activation `act`."""
  fields = dict(config.model.get("kwargs", {}))
  return models.get_model(config.model.name, act=act, num_classes=num_classes,
                          dtype=_dtype(config.model.get("dtype", "float32")),
                          conv_implementation=config.model.get("conv_implementation", "auto"),
                          **fields)


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

  def __init__(self, config, dataset: data_lib.Dataset, encoding: population.Encoding):
    # A frozen copy: later changes to the caller's config cannot leak into traced code.
    self.config = ml_collections.FrozenConfigDict(config)
    self.dataset = dataset
    self.encoding = encoding
    self.strategy = resolve_strategy(config.population.get("strategy", "auto"))
    self.normalize = bool(config.population.get("normalize", False))
    train_cfg = config.train
    objectives.check(train_cfg)
    self.training_loss = objectives.training_loss(train_cfg)
    self.evaluation_loss = objectives.evaluation_loss(train_cfg)
    self.batch_size = int(train_cfg.batch_size)
    self.steps_per_epoch = dataset.train.num_batches(self.batch_size)
    if self.steps_per_epoch == 0:
      raise ValueError(f"config.train.batch_size {self.batch_size} is larger than the training "
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

  def _model(self, codes):
    act = self.encoding.activation(codes, self.normalize)
    return build_model(self.config, act, self.dataset.info.num_classes)

  def _train_member(self, state, codes, seed, images, targets, steps):
    model = self._model(codes)
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

  def _evaluate_member(self, state, codes, images, labels, mask):
    model = self._model(codes)
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
    """Applies fn(*member, *shared) to every local member, by lax.map or vmap."""
    if self.strategy == "map":
      return jax.lax.map(lambda member: fn(*member, *shared_args), member_args)
    return jax.vmap(lambda *member: fn(*member, *shared_args))(*member_args)

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

  def init(self, seeds: Sequence[int]):
    """Initial state of every member (parameters, batch statistics, optimizer state).

    Members initialize one at a time with a program that depends on neither the activations
    nor the population size, so it compiles once per model and optimizer."""
    initialize = _member_initializer(self.config, self.dataset.info.num_classes,
                                     tuple(self.dataset.info.image_shape), self.steps_per_epoch)
    states = [initialize(np.int32(seed)) for seed in seeds]
    return jax.tree.map(lambda *leaves: self.put_members(np.stack(leaves)), *states)

  def train_epoch(self, state, codes, seeds, epoch: int):
    """One epoch; returns (state, totals per member as host numpy)."""
    rows = self.dataset.train.batch_indices(self.batch_size, seed=int(self.config.seed),
                                            epoch=epoch)
    per_call = int(self.config.train.get("steps_per_call", 0)) or len(rows)
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
    return state, _to_host(totals)

  def evaluate(self, state, codes, split: data_lib.Split) -> dict[str, np.ndarray]:
    """Loss and accuracy of every member on a split: host numpy arrays."""
    batch_size = int(self.config.train.get("eval_batch_size", 0)) or self.batch_size
    batches = list(split.eval_batches(batch_size))
    per_call = int(self.config.train.get("eval_batches_per_call", 0)) or len(batches)
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
    return _loss_and_accuracy(_to_host(totals))


@functools.lru_cache(maxsize=8)
def _cached_initializer(model_json: str, train_json: str, num_classes: int,
                        image_shape: tuple[int, ...], steps_per_epoch: int):
  config = ml_collections.ConfigDict({"model": json.loads(model_json)})
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(json.loads(train_json)),
                                   steps_per_epoch)

  @jax.jit
  def initialize(seed):
    # Parameters do not depend on the activation: every member initializes with the identity.
    # XLA:CPU compiles the RBG generator several times faster than threefry; this program runs
    # one member at a time, so its values do not depend on the strategy or the devices.
    model = build_model(config, lambda x: x, num_classes)
    key = jax.random.key(seed, impl="rbg")
    sample = jnp.zeros((1,) + image_shape, jnp.float32)
    variables = model.init({"params": key, "dropout": key}, sample, train=False)
    params = variables["params"]
    return {"params": params, "batch_stats": variables.get("batch_stats", {}),
            "opt_state": optimizer.init(params), "diverged": jnp.array(False)}

  return initialize


def _member_initializer(config, num_classes, image_shape, steps_per_epoch):
  return _cached_initializer(config.model.to_json_best_effort(sort_keys=True),
                             config.train.to_json_best_effort(sort_keys=True), num_classes,
                             image_shape, steps_per_epoch)


_TRAINERS: dict[tuple, PopulationTrainer] = {}
_MAX_TRAINERS = 8


def _trainer(config, dataset: data_lib.Dataset, encoding: population.Encoding):
  """A cached trainer: populations of the same space, config and dataset (a search trains
  many) reuse its compiled programs."""
  key = (config.to_json_best_effort(sort_keys=True), id(dataset), encoding, jax.device_count())
  trainer = _TRAINERS.get(key)
  if trainer is None or trainer.dataset is not dataset:
    if len(_TRAINERS) >= _MAX_TRAINERS:
      _TRAINERS.pop(next(iter(_TRAINERS)))
    trainer = _TRAINERS[key] = PopulationTrainer(config, dataset, encoding)
  return trainer


def _global_array(array: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array from a host array every process holds in full (works on many hosts)."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _to_host(tree):
  if jax.process_count() > 1:
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
  return jax.tree.map(np.asarray, tree)


def _loss_and_accuracy(totals) -> dict[str, np.ndarray]:
  count = np.maximum(totals["count"], 1)
  loss = np.where(totals["count"] > 0, totals["loss"] / count, np.nan)
  # Accuracy of non-finite logits means nothing: it is missing wherever the loss is.
  return {"loss": loss, "accuracy": np.where(np.isfinite(loss), totals["correct"] / count, np.nan)}


@dataclasses.dataclass
class PopulationResult:
  """Per-member results (lists in member order) of a population training."""

  activations: list[str]
  seeds: list[int]
  metrics: dict[str, list[float]]  # train/validation/test _loss and _accuracy
  diverged: list[bool]
  runtime_s: list[float]  # the population's wall time shared equally among its members
  history: list[dict[str, list[float]]] = dataclasses.field(default_factory=list)

  def members(self) -> list[dict[str, Any]]:
    rows = []
    for i, (activation, seed) in enumerate(zip(self.activations, self.seeds)):
      row = {"activation": activation, "seed": seed, "diverged": self.diverged[i],
             "runtime_s": self.runtime_s[i]}
      row.update({name: values[i] for name, values in self.metrics.items()})
      rows.append(row)
    return rows

  def by_activation(self) -> dict[str, dict[str, Any]]:
    """Medians over seeds per activation (NaN-aware), and whether any seed diverged."""
    result = {}
    for activation in dict.fromkeys(self.activations):
      index = [i for i, a in enumerate(self.activations) if a == activation]
      summary = {"seeds": [self.seeds[i] for i in index],
                 "diverged": any(self.diverged[i] for i in index),
                 "runtime_s": float(np.sum([self.runtime_s[i] for i in index]))}
      for name, values in self.metrics.items():
        chosen = np.array([values[i] for i in index], np.float64)
        summary[name] = float(np.nanmedian(chosen)) if np.isfinite(chosen).any() else np.nan
      result[activation] = summary
    return result

  def to_json(self) -> dict[str, Any]:
    return {"members": self.members(), "by_activation": self.by_activation(),
            "history": self.history}


def _population_id(config, names: Sequence[str], seeds: Sequence[int]) -> str:
  text = json.dumps([config.to_json() if hasattr(config, "to_json") else str(config),
                     list(names), list(seeds)], sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_directory(workdir: str, config, names: Sequence[str], seeds: Sequence[int]) -> str:
  """Where the checkpoints of the population of `names` x `seeds` live in the workdir."""
  return os.path.join(os.path.abspath(workdir), "checkpoints",
                      _population_id(config, names, seeds))


def _checkpoint_manager(workdir: str | None, config, names, seeds):
  if not workdir or not int(config.get("checkpoint_every_epochs", 1)):
    return None
  directory = checkpoint_directory(workdir, config, names, seeds)
  options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options)


def _train_group(config, dataset, encoding, names: list[str], seeds: list[int],
                 workdir: str | None, stop_after_epoch: int | None, progress: bool = False):
  """Trains one population; returns (metrics, diverged, wall seconds, history)."""
  codes = encoding.encode(names)
  trainer = _trainer(config, dataset, encoding)
  size = len(names)
  padded = -size % jax.device_count()  # the population axis must divide over the devices
  codes = np.concatenate([codes, np.repeat(codes[:1], padded, 0)])
  seed_array = np.asarray(list(seeds) + [seeds[0]] * padded, np.int32)
  start = time.perf_counter()
  state = trainer.init(seed_array)
  codes, seed_array = trainer.put_members(codes), trainer.put_members(seed_array)
  manager = _checkpoint_manager(workdir, config, names, seeds)
  first_epoch, history, elapsed = 0, [], 0.0
  if manager is not None and manager.latest_step() is not None:
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.StandardRestore(
        {"state": state, "history": _history_template(step, size),
         "elapsed": np.float64(0)}))
    state, first_epoch = restored["state"], step
    history = _history_from_arrays(restored["history"])
    elapsed = float(restored["elapsed"])
    logging.info("Resumed population %s from epoch %d", manager.directory, step)
  num_epochs = int(config.train.num_epochs)
  bar = _epoch_bar(first_epoch, num_epochs, size, progress)
  for epoch in range(first_epoch, num_epochs):
    state, totals = trainer.train_epoch(state, codes, seed_array, epoch)
    epoch_metrics = _loss_and_accuracy(totals)
    history.append({"train_loss": epoch_metrics["loss"][:size].tolist(),
                    "train_accuracy": epoch_metrics["accuracy"][:size].tolist()})
    finite = epoch_metrics["accuracy"][:size][np.isfinite(epoch_metrics["accuracy"][:size])]
    logging.info("epoch %d/%d: median train accuracy %s (%d of %d members finite)", epoch + 1,
                 num_epochs, f"{np.median(finite):.4f}" if finite.size else "-", finite.size, size)
    every = int(config.get("checkpoint_every_epochs", 1)) if manager else 0
    if manager is not None and ((epoch + 1) % every == 0 or epoch + 1 == num_epochs):
      manager.save(epoch + 1, args=ocp.args.StandardSave(
          {"state": state, "history": _history_arrays(history),
           "elapsed": np.float64(elapsed + time.perf_counter() - start)}))
      manager.wait_until_finished()
    bar.update(1)
    if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < num_epochs:
      bar.close()
      raise TrainingInterrupted(epoch + 1)
  bar.close()
  # Train metrics of each member's last epoch with finite ones (a diverged member's last
  # healthy epoch).
  metrics = {name: _last_finite([epoch[name] for epoch in history], size)
             for name in ("train_loss", "train_accuracy")}
  for split_name in ("validation", "test"):
    split = getattr(dataset, split_name)
    if split.num_examples == 0:
      continue
    values = trainer.evaluate(state, codes, split)
    metrics[f"{split_name}_loss"] = values["loss"][:size].tolist()
    metrics[f"{split_name}_accuracy"] = values["accuracy"][:size].tolist()
  diverged = _to_host(state["diverged"])[:size]
  # A member whose final evaluation is not finite failed too (its last finite metrics stay).
  if "validation_loss" in metrics:
    diverged = diverged | ~np.isfinite(metrics["validation_loss"])
  wall = elapsed + time.perf_counter() - start
  return metrics, diverged.tolist(), wall, history


def _epoch_bar(first_epoch: int, num_epochs: int, size: int, progress: bool):
  """A progress bar over epochs with ETA (process 0, when asked; a no-op otherwise)."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=num_epochs, initial=first_epoch, unit="epoch", leave=False,
              desc=f"training {size} members", dynamic_ncols=True,
              disable=not progress or jax.process_index() != 0)


def _last_finite(per_epoch: list[list[float]], size: int) -> list[float]:
  values = np.full(size, np.nan)
  for epoch_values in per_epoch:
    epoch_values = np.asarray(epoch_values, np.float64)
    values = np.where(np.isfinite(epoch_values), epoch_values, values)
  return values.tolist()


def _history_arrays(history):
  return {key: np.asarray([epoch[key] for epoch in history], np.float64)
          for key in ("train_loss", "train_accuracy")}


def _history_template(epochs: int, size: int):
  return {key: np.zeros((epochs, size), np.float64) for key in ("train_loss", "train_accuracy")}


def _history_from_arrays(arrays):
  epochs = len(arrays["train_loss"])
  return [{key: np.asarray(arrays[key][e]).tolist() for key in arrays} for e in range(epochs)]


class TrainingInterrupted(RuntimeError):
  """Raised by `stop_after_epoch`, to simulate a preempted job in tests."""


def population_groups(config, names: Sequence[str]) -> list[tuple[Any, list[int]]]:
  """How members train: a list of (population form, member indices), one compiled program each.

  With config.population.schema, one population encoded over that search space (its
  programs serve every later population of the space). Otherwise names that share a schema
  form one population; with the 'map' strategy, names of several schemas still train as one
  population, each code selecting a whole function (population.FunctionTable).
  """
  schema = config.population.get("schema", "")
  everyone = list(range(len(names)))
  if schema or resolve_strategy(config.population.get("strategy", "auto")) == "map":
    return [(population.form(names, schema), everyone)]
  # vmap evaluates every function of a FunctionTable for every member: one population per
  # schema instead.
  by_schema: dict[str, list[int]] = {}
  for index, name in enumerate(names):
    by_schema.setdefault(str(population.schema_of(name)), []).append(index)
  return [(population.form([names[i] for i in indices]), indices)
          for indices in by_schema.values()]


def train_population(config, activations: Sequence[str], seeds: Sequence[int] = (0,), *,
                     workdir: str | None = None, dataset: data_lib.Dataset | None = None,
                     stop_after_epoch: int | None = None,
                     progress: bool = False) -> PopulationResult:
  """Trains every (activation, seed) pair and returns their results.

  Args:
    config: an experiment config (configs/*.py): sections dataset, model, train, population.
    activations: activation names, of any schemas (see population_groups).
    seeds: each activation trains once per seed (initialization and dropout differ; all
      members see the same batches).
    workdir: where checkpoints (and nothing else) go; None disables checkpointing.
    dataset: a loaded dataset, to skip `data.load(config.dataset...)`.
    stop_after_epoch: stop (raising TrainingInterrupted) after this epoch, as a preemption.
    progress: show a progress bar over epochs (with ETA) on process 0.

  Returns:
    PopulationResult in member order: activations[0] with every seed, then activations[1]...
  """
  if isinstance(activations, str):
    raise TypeError("activations must be a list of names, got a single string")
  names = [str(parse(a)) for a in activations]
  seeds = [int(s) for s in seeds]
  if not names or not seeds:
    raise ValueError("train_population needs at least one activation and one seed")
  if dataset is None:
    dataset = load_dataset(config)
  members = [(name, seed) for name in names for seed in seeds]
  groups = population_groups(config, [name for name, _ in members])
  metrics: dict[str, list[float]] = {}
  diverged = [False] * len(members)
  runtime = [0.0] * len(members)
  histories = []
  for encoding, indices in groups:
    group_metrics, group_diverged, wall, history = _train_group(
        config, dataset, encoding, [members[i][0] for i in indices],
        [members[i][1] for i in indices], workdir, stop_after_epoch, progress)
    for name, values in group_metrics.items():
      metrics.setdefault(name, [np.nan] * len(members))
      for i, value in zip(indices, values):
        metrics[name][i] = float(value)
    for i, flag in zip(indices, group_diverged):
      diverged[i] = bool(flag)
      runtime[i] = wall / len(indices)
    histories.append({"members": indices, "epochs": history})
  return PopulationResult([m[0] for m in members], [m[1] for m in members], metrics, diverged,
                          runtime, histories)


def checkpoint_directories(config, activations: Sequence[str], seeds: Sequence[int],
                           workdir: str) -> list[str]:
  """The checkpoint directories `train_population` uses for these arguments (one per
  population group), e.g. to delete them once the results are recorded elsewhere."""
  names = [str(parse(a)) for a in activations]
  members = [(name, int(seed)) for name in names for seed in seeds]
  return [checkpoint_directory(workdir, config, [members[i][0] for i in indices],
                               [members[i][1] for i in indices])
          for _, indices in population_groups(config, [name for name, _ in members])]


def load_dataset(config) -> data_lib.Dataset:
  """`data.load` with the fields of config.dataset."""
  cfg = config.dataset
  kwargs = {k: cfg.get(k) for k in ("data_dir", "validation_size", "image_size")
            if cfg.get(k, None)}  # empty / 0: the dataset's default
  if "validation_size" in kwargs and kwargs["validation_size"] >= 1:
    kwargs["validation_size"] = int(kwargs["validation_size"])  # a count, not a fraction
  return data_lib.load(cfg.name, seed=int(config.seed), **kwargs)
