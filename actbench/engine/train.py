"""Population training: every (activation, seed) pair trained and its results collected.

`train_population` groups the members into populations (one compiled program each, see
`population_groups`), trains each with trainer.PopulationTrainer (many candidates in one
program, sharded over every device) and returns a PopulationResult.

Training is checkpointed with Orbax every epoch when a workdir is given, and a restarted run
resumes from the last checkpoint with the same result as an uninterrupted run (batches,
augmentation and dropout are pure functions of the seed and the step). A population's
checkpoint directory is named by what its training depends on (`training_identity`, its
functions and seeds, its data and model), so a search resumed with another budget resumes it;
`remove_checkpoints` removes those of finished populations.

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
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from actbench import defaults
from actbench.engine import caching, halving, model_factory, population
from actbench.engine import data as data_lib
from actbench.engine import trainer as trainer_lib
from actbench.engine.results import CURVES, PopulationResult, rung_score  # re-exported
from actbench.errors import ConfigError
from actbench.expr.expression import parse

resolve_strategy = population.resolve_strategy


DIVERGENCE_RULES = ("fail", "chance")


def provenance(dataset: data_lib.Dataset, make_model) -> str:
  """What a population's results depend on beyond the config: the data and the model."""
  return (f"{dataset.fingerprint}/"
          f"{model_factory.identity(make_model, tuple(dataset.info.input_shape))}")


# Where the data lives and whether it may be downloaded: not what it is (its fingerprint is in
# `provenance`), so moving a dataset keeps its checkpoints.
DATA_LOCATION = ("data_dir", "download")


def training_identity(config) -> dict[str, Any]:
  """What a population's training depends on in `config`: the data (less where it lives), the
  model, the train and population sections, the seeds. The mode, the search, surrogate,
  Fisher, benchmark, replay and report sections, the activations and the checkpoint period
  are left out, so a search resumed with a larger budget (or other surrogate settings) resumes
  its populations' checkpoints."""
  config = defaults.complete(config)
  dataset = config.dataset.to_dict()
  for name in DATA_LOCATION:
    dataset.pop(name)
  return {"dataset": dataset, "model": config.model.to_dict(),
          "train": config.train.to_dict(), "population": config.population.to_dict(),
          "seeds": [int(seed) for seed in config.seeds], "seed": int(config.seed)}


def _digest(value) -> str:
  text = json.dumps(value, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _population_id(config, names: Sequence[str], seeds: Sequence[int], source: str) -> str:
  return _digest([training_identity(config), list(names), list(seeds), source])


CHECKPOINTS = "checkpoints"  # the workdir's folder of checkpoint directories
POPULATION_FILE = "population.json"  # in each: what it trains (`read_population`)


def checkpoint_directory(workdir: str, config, names: Sequence[str], seeds: Sequence[int],
                         source: str) -> str:
  """Where the checkpoints of the population of `names` x `seeds` live in the workdir
  (`source`: its `provenance`)."""
  return os.path.join(os.path.abspath(workdir), CHECKPOINTS,
                      _population_id(config, names, seeds, source))


def _make_checkpoint_directory(workdir: str, config, names: Sequence[str], seeds: Sequence[int],
                               source: str) -> str:
  """`checkpoint_directory`, created with its POPULATION_FILE before any checkpoint is in it,
  so that `remove_checkpoints` can tell whose it is."""
  directory = checkpoint_directory(workdir, config, names, seeds, source)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, POPULATION_FILE)
  if not os.path.exists(path):
    record = {"id": os.path.basename(directory),
              "training": _digest(training_identity(config)), "source": source,
              "names": list(names), "seeds": [int(seed) for seed in seeds]}
    # Written whole or not at all (a reader never sees half a file); every process of a
    # multi-host job may write it, with the same content.
    partial = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    with open(partial, "w", encoding="utf-8") as f:
      json.dump(record, f, indent=1)
    os.replace(partial, path)
  return directory


def read_population(directory: str) -> dict[str, Any] | None:
  """The POPULATION_FILE of a checkpoint directory (keys id, training, source, names, seeds:
  per member), or None where it has none or an unreadable one."""
  try:
    with open(os.path.join(directory, POPULATION_FILE), encoding="utf-8") as f:
      record = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(record, dict) or not isinstance(record.get("names"), list):
    return None
  return record


# The name of a checkpoint directory, of this version or an older one (which has no
# POPULATION_FILE).
_POPULATION_ID = re.compile(r"[0-9a-f]{16}")

LEGACY_AGE_S = 24 * 3600.0  # see remove_checkpoints


def remove_checkpoints(workdir: str, finished: Callable[[list[str]], bool], *,
                       legacy_age_s: float = LEGACY_AGE_S) -> list[str]:
  """Removes the workdir's checkpoint directories that no run will resume; returns them.

  A directory goes when `finished(names)` says so for the distinct activation names its
  POPULATION_FILE lists (a search: every one has its results recorded, so no worker trains
  that population again). A directory without one was written by an older version of actbench,
  whose directory names no longer match any population's: it goes once nothing in it has
  changed for `legacy_age_s` (an older process may still be writing it). Anything else in the
  folder stays.

  `finished` must only say yes for names that no live process is training: a directory is
  removed whatever happens in it.
  """
  root = os.path.join(os.path.abspath(workdir), CHECKPOINTS)
  try:
    entries = sorted(os.listdir(root))
  except FileNotFoundError:
    return []
  removed = []
  for entry in entries:
    directory = os.path.join(root, entry)
    if not _POPULATION_ID.fullmatch(entry) or not os.path.isdir(directory):
      continue
    record = read_population(directory)
    if record is None:
      if time.time() - _last_change(directory) < legacy_age_s:
        continue
    elif not finished(list(dict.fromkeys(str(name) for name in record["names"]))):
      continue
    shutil.rmtree(directory, ignore_errors=True)
    removed.append(directory)
  return removed


def _last_change(directory: str) -> float:
  """The latest modification time of `directory` or anything in it."""
  latest = os.path.getmtime(directory)
  for folder, subfolders, files in os.walk(directory):
    for name in subfolders + files:
      try:
        latest = max(latest, os.lstat(os.path.join(folder, name)).st_mtime)
      except OSError:  # removed meanwhile
        pass
  return latest


def _checkpoint_manager(workdir: str | None, config, names, seeds, source: str):
  if not workdir or not int(config.checkpoint_every_epochs):
    return None
  directory = _make_checkpoint_directory(workdir, config, names, seeds, source)
  options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options)


@dataclasses.dataclass
class _Carried:
  """Members' training to hand on to the next rung: their states (host arrays, member axis
  first), history arrays (key -> (epochs, members)) and the epoch they reached."""
  state: Any
  history: dict[str, np.ndarray]
  epoch: int

  def take(self, positions: Sequence[int]) -> _Carried:
    positions = np.asarray(positions, np.int64)
    return _Carried(jax.tree.map(lambda a: np.asarray(a)[positions], self.state),
                    {key: values[:, positions] for key, values in self.history.items()},
                    self.epoch)

  @staticmethod
  def join(parts: Sequence[_Carried]) -> _Carried:
    if len({part.epoch for part in parts}) != 1:
      raise ValueError("members carried from different epochs cannot train as one population")
    return _Carried(jax.tree.map(lambda *a: np.concatenate(a), *[p.state for p in parts]),
                    {key: np.concatenate([p.history[key] for p in parts], axis=1)
                     for key in parts[0].history}, parts[0].epoch)


@dataclasses.dataclass
class _GroupRun:
  """What one population trained: metrics at its last epoch, its history and, unless it
  reached the full training, its members' state to carry on."""
  metrics: dict[str, list[float]]
  diverged: list[bool]
  wall_s: float
  history: list[dict[str, list]]
  resumed_from: int
  carried: _Carried | None


def _history_keys(dataset) -> tuple[str, ...]:
  """What a population records after every epoch: train metrics, validation metrics where
  the data has a validation split, and whether each member had failed."""
  keys = ("train_loss", "train_accuracy")
  if dataset.validation.num_examples:
    keys += ("validation_loss", "validation_accuracy")
  return keys + ("diverged",)


def _train_group(config, dataset, make_model, encoding, names: list[str], seeds: list[int],
                 workdir: str | None, stop_after_epoch: int | None, progress: bool = False, *,
                 until: int | None = None, initial: _Carried | None = None,
                 on_epoch: Callable[[list[str], list[int], int, dict], None] | None = None
                 ) -> _GroupRun:
  """Trains one population to epoch `until` (config.train.num_epochs by default), from its
  last checkpoint, else from `initial` (members carried from a rung before), else from the
  start, evaluating the validation split after every epoch. `on_epoch(names, seeds, epoch,
  record)` sees each epoch trained here (not those restored), as it ends."""
  num_epochs = int(config.train.num_epochs)
  until = num_epochs if until is None else int(until)
  codes = encoding.encode(names)
  trainer = trainer_lib.cached_trainer(config, dataset, encoding, make_model)
  size = len(names)
  padded = -size % jax.device_count()  # the population axis must divide over the devices
  codes = np.concatenate([codes, np.repeat(codes[:1], padded, 0)])
  seed_array = np.asarray(list(seeds) + [seeds[0]] * padded, np.int32)
  keys = _history_keys(dataset)
  start = time.perf_counter()
  if initial is not None:
    state = jax.tree.map(lambda a: trainer.put_members(np.concatenate(
        [a, np.repeat(a[:1], padded, 0)])), initial.state)
  else:
    state = trainer.init(seed_array)
  codes, seed_array = trainer.put_members(codes), trainer.put_members(seed_array)
  manager = _checkpoint_manager(workdir, config, names, seeds,
                                provenance(dataset, make_model) if workdir else "")
  first_epoch, history, elapsed, resumed_from = 0, [], 0.0, 0
  if initial is not None:
    first_epoch = initial.epoch
    history = _history_from_arrays(initial.history)
  if manager is not None and (manager.latest_step() or 0) > first_epoch:
    step = manager.latest_step()
    state, history, elapsed, legacy = _restore(manager, step, state, keys, size)
    first_epoch = resumed_from = step
    logging.info("Resumed population %s from epoch %d", manager.directory, step)
    if legacy and "validation_loss" in keys:  # its last epoch's evaluation, as it would have
      values = trainer.evaluate(state, codes, dataset.validation)
      history[-1]["validation_loss"] = values["loss"][:size].tolist()
      history[-1]["validation_accuracy"] = values["accuracy"][:size].tolist()
      history[-1]["diverged"] = (np.asarray(history[-1]["diverged"], bool)
                                 | ~np.isfinite(values["loss"][:size])).tolist()
  bar = _epoch_bar(first_epoch, until, size, progress)
  for epoch in range(first_epoch, until):
    state, totals = trainer.train_epoch(state, codes, seed_array, epoch)
    epoch_metrics = trainer_lib.loss_and_accuracy(totals)
    record = {"train_loss": epoch_metrics["loss"][:size].tolist(),
              "train_accuracy": epoch_metrics["accuracy"][:size].tolist()}
    if "validation_loss" in keys:  # the learning curve: the same evaluation as the final one
      values = trainer.evaluate(state, codes, dataset.validation)
      record["validation_loss"] = values["loss"][:size].tolist()
      record["validation_accuracy"] = values["accuracy"][:size].tolist()
    failed = trainer_lib.to_host(state["diverged"])[:size]
    if "validation_loss" in record:  # an evaluation that is not finite fails the member too
      failed = failed | ~np.isfinite(record["validation_loss"])
    record["diverged"] = failed.tolist()
    history.append(record)
    if on_epoch is not None:
      on_epoch(names, list(seeds), epoch + 1, record)
    finite = epoch_metrics["accuracy"][:size][np.isfinite(epoch_metrics["accuracy"][:size])]
    logging.info("epoch %d/%d: median train accuracy %s (%d of %d members finite)", epoch + 1,
                 num_epochs, f"{np.median(finite):.4f}" if finite.size else "-", finite.size, size)
    every = int(config.checkpoint_every_epochs) if manager else 0
    if manager is not None and ((epoch + 1) % every == 0 or epoch + 1 in (until, num_epochs)):
      manager.save(epoch + 1, args=ocp.args.StandardSave(
          {"state": state, "history": _history_arrays(history, keys),
           "elapsed": np.float64(elapsed + time.perf_counter() - start)}))
      manager.wait_until_finished()
    bar.update(1)
    if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < num_epochs:
      bar.close()
      raise TrainingInterrupted(epoch + 1)
  bar.close()
  reached = len(history)  # `until`, or more where a checkpoint had gone further
  # Train metrics of each member's last epoch with finite ones (a diverged member's last
  # healthy epoch).
  metrics = {name: _last_finite([epoch[name] for epoch in history], size)
             for name in ("train_loss", "train_accuracy")}
  if "validation_loss" in keys:  # the last epoch's evaluation is the final one
    for name in ("validation_loss", "validation_accuracy"):
      metrics[name] = list(history[-1][name]) if history else [math.nan] * size
  if reached >= num_epochs and dataset.test.num_examples:
    values = trainer.evaluate(state, codes, dataset.test)
    metrics["test_loss"] = values["loss"][:size].tolist()
    metrics["test_accuracy"] = values["accuracy"][:size].tolist()
  diverged = trainer_lib.to_host(state["diverged"])[:size]
  if history and "validation_loss" in keys:  # a final evaluation that is not finite: failed
    diverged = np.asarray(history[-1]["diverged"], bool)
  wall = elapsed + time.perf_counter() - start
  carried = None
  if reached < num_epochs:
    carried = _Carried(jax.tree.map(lambda a: np.asarray(a)[:size], trainer_lib.to_host(state)),
                       _history_arrays(history, keys), reached)
  return _GroupRun(metrics, diverged.tolist(), wall, history, resumed_from, carried)


def _restore(manager, step: int, state, keys: tuple[str, ...], size: int):
  """(state, history, elapsed seconds, legacy) of a population's checkpoint at `step`. A
  legacy checkpoint, written before learning curves were recorded, holds the train metrics
  alone: the validation curve of its epochs is NaN (the caller evaluates the last), and each
  member counts as failed there as it was at `step`."""
  def restore(history_keys):
    return manager.restore(step, args=ocp.args.StandardRestore(
        {"state": state, "history": _history_template(step, size, history_keys),
         "elapsed": np.float64(0)}))
  try:
    restored, legacy = restore(keys), False
  except (ValueError, KeyError, TypeError):
    legacy = ("train_loss", "train_accuracy")
    restored = restore(legacy)
    flags = trainer_lib.to_host(restored["state"]["diverged"])[:size].astype(np.float64)
    restored["history"] = dict(restored["history"])
    for key in keys:
      if key not in legacy:
        restored["history"][key] = (np.tile(flags, (step, 1)) if key == "diverged"
                                    else np.full((step, size), np.nan))
  return (restored["state"], _history_from_arrays(restored["history"]),
          float(restored["elapsed"]), bool(legacy))


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


def _history_arrays(history, keys):
  return {key: np.asarray([epoch[key] for epoch in history], np.float64).reshape(
      len(history), -1) for key in keys}


def _history_template(epochs: int, size: int, keys):
  return {key: np.zeros((epochs, size), np.float64) for key in keys}


def _history_from_arrays(arrays):
  epochs = len(next(iter(arrays.values())))
  return [{key: (np.asarray(arrays[key][e]).astype(bool) if key == "diverged"
                 else np.asarray(arrays[key][e])).tolist() for key in arrays}
          for e in range(epochs)]


class TrainingInterrupted(RuntimeError):
  """Raised by `stop_after_epoch`, to simulate a preempted job in tests."""


def population_groups(config, names: Sequence[str]) -> list[tuple[Any, list[int]]]:
  """How members train: a list of (population form, member indices), one compiled program each.

  With config.population.schema, one population encoded over that search space (its
  programs serve every later population of the space). Otherwise names that share a schema
  form one population; with the 'map' and 'grouped' strategies, names of several schemas
  still train as one population, each code selecting a whole function
  (population.FunctionTable).
  """
  schema = config.population.schema
  everyone = list(range(len(names)))
  if schema or resolve_strategy(config.population.strategy) in ("map", "grouped"):
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
                     make_model=None, stop_after_epoch: int | None = None,
                     progress: bool = False,
                     fidelity: halving.Fidelity | None = None,
                     on_epoch: Callable[..., None] | None = None) -> PopulationResult:
  """Trains every (activation, seed) pair and returns their results.

  Args:
    config: an experiment config (configs/*.py): sections dataset, model, train, population.
    activations: activation names, of any schemas (see population_groups).
    seeds: each activation trains once per seed (initialization and dropout differ; all
      members see the same batches).
    workdir: where checkpoints (and nothing else) go; None disables checkpointing.
    dataset: a loaded dataset (e.g. `data.from_arrays(...)`) instead of config.dataset's.
    make_model: your model, `act -> flax Module`, instead of config.model's.
    stop_after_epoch: stop (raising TrainingInterrupted) after this epoch, as a preemption.
    progress: show a progress bar over epochs (with ETA) on process 0.
    fidelity: successive halving (halving.Fidelity): the activations train to each rung's
      epoch in turn, and only the best 1/eta of them, by validation accuracy there (summed up
      over seeds and folds as the final figure), go on; the survivors continue from their
      state as a smaller population. None: every activation trains every epoch.
    on_epoch: called as `on_epoch(names, seeds, epoch, record, fold=)` after every epoch a
      population trains (names and seeds: its runs'; record: the epoch's per-run lists
      "train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "diverged";
      fold: None unless cross-validating), e.g. to log the curves while they grow.

  With config.dataset.folds = k >= 2, every (activation, seed) trains once per fold of a k-fold
  cross-validation over the dataset's train and validation splits (`folds_of`).

  Every epoch ends with an evaluation of the validation split: the learning curves
  (`PopulationResult.curves`); the last one is the final validation figure.

  Returns:
    PopulationResult in run order: activations[0] with every seed (each with every fold), then
    activations[1]... An activation stopped by halving has `epochs` below num_epochs, the
    metrics of its last epoch and no test figures.
  """
  if isinstance(activations, str):
    raise TypeError("activations must be a list of names, got a single string")
  names = [str(parse(a)) for a in activations]
  seeds = [int(s) for s in seeds]
  if not names or not seeds:
    raise ValueError("train_population needs at least one activation and one seed")
  config = defaults.complete(config)
  divergence = str(config.train.divergence)
  if divergence not in DIVERGENCE_RULES:
    raise ConfigError(f"config.train.divergence must be one of {DIVERGENCE_RULES}, got "
                      f"{divergence!r}")
  num_epochs = int(config.train.num_epochs)
  if fidelity is not None and fidelity.rungs[-1] != num_epochs:
    raise ConfigError(f"successive halving's last rung must be config.train.num_epochs "
                      f"({num_epochs}), got rungs {list(fidelity.rungs)}")
  dataset, make_model = task(config, dataset, make_model)
  if fidelity is not None and not dataset.validation.num_examples:
    raise ConfigError("successive halving ranks functions by validation accuracy: the data "
                      "needs a validation split (config.dataset.validation_size)")
  fold_datasets = folds_of(config, dataset)
  members = [(name, seed, fold) for name in names for seed in seeds
             for fold in range(len(fold_datasets))]
  result = PopulationResult(
      [m[0] for m in members], [m[1] for m in members], {}, [False] * len(members),
      [0.0] * len(members), folds=[m[2] for m in members] if len(fold_datasets) > 1 else [],
      divergence=divergence, num_classes=dataset.info.num_classes,
      curve_failed=[[] for _ in members], epochs=[0] * len(members), num_epochs=num_epochs)
  carried: dict[int, tuple[_Carried, int]] = {}  # run -> (its group's carried, its position)
  active = list(dict.fromkeys(names))
  rungs = fidelity.rungs if fidelity is not None else (num_epochs,)
  # The populations of the first rung; a later rung trains the survivors of each in its form,
  # so that the rungs of a round share its compiled programs (one per population size).
  groups = {fold: [(encoding, [in_fold[p] for p in positions]) for encoding, positions
                   in population_groups(config, [members[i][0] for i in in_fold])]
            for fold in range(len(fold_datasets))
            for in_fold in [[i for i, m in enumerate(members) if m[2] == fold]]}
  for rung, until in enumerate(rungs):
    chosen = set(active)
    for fold, fold_dataset in enumerate(fold_datasets):
      for encoding, everyone in groups[fold]:
        indices = [i for i in everyone if members[i][0] in chosen]
        if not indices:
          continue
        initial = None
        if rung:  # the members' training so far, from the populations of the rung before
          initial = _Carried.join([carried[i][0].take([carried[i][1]]) for i in indices])
        run = _train_group(config, fold_dataset, make_model, encoding,
                           [members[i][0] for i in indices], [members[i][1] for i in indices],
                           workdir, stop_after_epoch, progress, until=until, initial=initial,
                           on_epoch=None if on_epoch is None else functools.partial(
                               on_epoch, fold=fold if len(fold_datasets) > 1 else None))
        _collect(result, indices, run)
        for position, i in enumerate(indices):
          carried[i] = (run.carried, position)
        result.history.append({"members": indices, "fold": fold, "epochs": run.history,
                               "resumed_from_epoch": run.resumed_from, "rung": rung,
                               "until_epoch": until})
    if rung + 1 < len(rungs):
      summaries = result.by_activation()
      scores = [rung_score(summaries[name], until) for name in active]
      active = [active[k] for k in sorted(fidelity.survivors(scores))]  # as proposed
      logging.info("successive halving: %d functions go on from epoch %d to %d", len(active),
                   until, rungs[rung + 1])
  return result


def _collect(result: PopulationResult, indices: Sequence[int], run: _GroupRun) -> None:
  """Puts a trained population's figures at its runs' places in `result`."""
  size = len(result.activations)
  for name, values in run.metrics.items():
    column = result.metrics.setdefault(name, [math.nan] * size)
    for i, value in zip(indices, values):
      column[i] = float(value)
  for name in ("test_loss", "test_accuracy"):  # a run stopped early has none
    if name in result.metrics and name not in run.metrics:
      for i in indices:
        result.metrics[name][i] = math.nan
  for name in CURVES:
    if run.history and name in run.history[0]:
      runs = result.curves.setdefault(name, [[] for _ in range(size)])
      for position, i in enumerate(indices):
        runs[i] = [float(epoch[name][position]) for epoch in run.history]
  for position, i in enumerate(indices):
    result.diverged[i] = bool(run.diverged[position])
    result.runtime_s[i] += run.wall_s / len(indices)
    result.curve_failed[i] = [bool(epoch["diverged"][position]) for epoch in run.history]
    result.epochs[i] = len(run.history)


_FOLDS = caching.BoundedCache(8)  # datasets whose folds are kept (each holds index arrays only)


def folds_of(config, dataset: data_lib.Dataset) -> list[data_lib.Dataset]:
  """The datasets a population trains on: [dataset] itself, or its config.dataset.folds
  cross-validation folds (`data.cross_validation_folds`, by config.seed). Cached, so that every
  population of a search reuses the compiled programs of each fold."""
  num_folds = int(config.dataset.folds)
  if num_folds <= 1:
    return [dataset]
  # The dataset is kept with its folds, so no other dataset can take its id while they are.
  return _FOLDS.get((id(dataset), num_folds, int(config.seed)),
                    lambda: (dataset, data_lib.cross_validation_folds(
                        dataset, num_folds, seed=int(config.seed))))[1]


def checkpoint_directories(config, activations: Sequence[str], seeds: Sequence[int],
                           workdir: str, *, dataset: data_lib.Dataset,
                           make_model=None) -> list[str]:
  """The checkpoint directories `train_population` uses for these arguments (one per
  population group), e.g. to delete them once the results are recorded elsewhere."""
  names = [str(parse(a)) for a in activations]
  members = [(name, int(seed)) for name in names for seed in seeds]
  make_model = model_factory.from_config(config, dataset.info.num_classes, make_model)
  return [checkpoint_directory(workdir, config, [members[i][0] for i in indices],
                               [members[i][1] for i in indices],
                               provenance(fold_dataset, make_model))
          for fold_dataset in folds_of(config, dataset)
          for _, indices in population_groups(config, [name for name, _ in members])]


def load_dataset(config, *, progress: bool = True) -> data_lib.Dataset:
  """`data.load` with the fields of config.dataset."""
  cfg = config.dataset
  kwargs = {k: cfg[k] for k in ("data_dir", "validation_size", "image_size", "image_key",
                                "label_key", "max_examples") if cfg[k]}  # empty / 0: default
  if "validation_size" in kwargs and kwargs["validation_size"] >= 1:
    kwargs["validation_size"] = int(kwargs["validation_size"])  # a count, not a fraction
  return data_lib.load(cfg.name, seed=int(config.seed), download=bool(cfg.download),
                       progress=progress, **kwargs)


def task(config, dataset: data_lib.Dataset | None = None, make_model=None):
  """(dataset, make_model) of a job: the ones given, else config's; the model checked against
  the data (shapes only), so a mismatch fails here, before any work."""
  if dataset is None:
    dataset = load_dataset(config)
  make_model = model_factory.from_config(config, dataset.info.num_classes, make_model)
  model_factory.check(make_model, tuple(dataset.info.input_shape), dataset.info.num_classes)
  return dataset, make_model
