"""The search loop: propose, train a population, record, refit, until the budget is spent.

    from actbench import search
    summary = search.run(config, workdir)      # config.mode = 'search' (configs/quickstart.py)

Everything a search knows lives in the store (`workdir/search.sqlite`, store.py): the
space's equivalence classes, their output and Fisher features, every finished evaluation and
the classes other workers are evaluating now. A killed search restarted with the same command
keeps every finished result, proposes the same population again (proposals are deterministic
given the store) and resumes its training from the last checkpoint. Several workers may share
one store: each claims the classes it trains, for the whole equivalence class.

With config.search.fisher_budget > 0 (a large space), only the baselines and the classes a
budget's rounds pick get Fisher features (class_features.BudgetedFeatures, featurize.py): a
round is taken before the proposal it is due for, or early when the strategy runs short.

With config.search.fidelity.rungs (successive halving, engine/halving.py), each population
trains rung by rung and only the best 1/eta of it goes on; the classes stopped early are
recorded as 'stopped', never proposed again and never learnt from: strategies see the classes
trained in full. A kill between rungs resumes from the rung's checkpoints.

Multi-host (a TPU pod): every process runs the same loop; process 0 owns the store and
broadcasts its proposals, so all processes train the same population together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Sequence

from absl import logging
import jax
import numpy as np

from actbench import defaults
from actbench.engine import halving, model_factory, population, train
from actbench.expr import space
from actbench.expr.expression import ExpressionError
from actbench.search import featurize, journal, recovery
from actbench.search import store as store_lib
from actbench.search import strategies, surrogate
from actbench.search.class_features import (BudgetedFeatures, baseline_names,
                                            compute_features, embedding)
from actbench.search.workers import (SET_ASIDE, broadcast_ids, default_worker, heartbeat,
                                     is_dead_worker, progress_bar)

STORE_NAME = store_lib.FILE_NAME


def store_path(workdir: str) -> str:
  """The SQLite store of a workdir (the default store)."""
  return os.path.join(workdir, STORE_NAME)


def open_store(config, workdir: str, *, create: bool = True) -> store_lib.SearchStore:
  """The store config.search.store names: '' for the workdir's search.sqlite, or a
  postgresql:// database shared by many machines (the search under config.search.name,
  made unless not `create`)."""
  cfg = config.search
  return store_lib.open_store(str(cfg.store), workdir=workdir, name=str(cfg.name),
                              retry_s=float(cfg.store_retry_s), create=create)


def has_store(config, workdir: str) -> bool:
  """Whether there is a store to read: a database always, a workdir's file when it exists."""
  return bool(config.search.store) or os.path.exists(store_path(workdir))


def space_classes(config) -> list[list[str]]:
  """The equivalence classes of config.search.space plus the baselines (a baseline outside the
  space is a class of its own), representative first, in enumeration order."""
  cfg = config.search
  names = space.enumerate(cfg.space, unary=cfg.unary or None, binary=cfg.binary or None,
                          nary=cfg.nary or None)
  return space.equivalence_classes(list(names) + baseline_names(config))


SPACE_KEY = "space.config"  # meta: the config fields the store's space was enumerated from


def space_config(config) -> str:
  """What config.search's space is enumerated from (schema, operators, baselines), as JSON."""
  cfg = config.search
  return json.dumps({"space": str(cfg.space), "unary": list(cfg.unary),
                     "binary": list(cfg.binary), "nary": list(cfg.nary),
                     "baselines": baseline_names(config)}, sort_keys=True)


def init_space(db: store_lib.SearchStore, config) -> None:
  """Writes config's space into a new store, or checks that a store holds it. A store that
  recorded the same space fields is not enumerated again: for a space of a million classes,
  minutes at every restart of every worker."""
  fields = space_config(config)
  if db.num_classes and db.get_meta(SPACE_KEY) == fields:
    db.load_space()
    return
  db.init_space(config.search.space, space_classes(config))
  db.set_meta(SPACE_KEY, fields)


def operator_choices(config) -> list[tuple[str, ...]]:
  """The operators each placeholder of config.search.space may take (`space.operator_choices`):
  what evolution's mutations choose from."""
  cfg = config.search
  return space.operator_choices(cfg.space, cfg.unary or None, cfg.binary or None,
                                cfg.nary or None)


def training_config(config):
  """The config populations train with: over the whole space's encoding when the space uses
  the default operator tables (one compiled program serves every round)."""
  cfg = config.search
  config = config.copy_and_resolve_references()
  if not (cfg.unary or cfg.binary or cfg.nary):
    with config.unlocked():
      config.population.schema = config.population.schema or cfg.space
  return config


# Fields added after stores existed, with the values that change nothing; at those values they
# are left out of the fingerprint, so older stores stay valid.
_LATER_FIELDS = {
    "train": {"loss": "softmax_cross_entropy", "target_threshold": 0.0, "crop_min_scale": 0.08,
              "eval_crop_fraction": 0.875, "randaugment_layers": 0,
              "randaugment_magnitude": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0,
              "mixup_switch_prob": 0.5, "divergence": "fail"},
    "dataset": {"download": True, "image_key": "image", "label_key": "label", "folds": 0,
                "max_examples": 0},
    "fisher": {"eigenvalue_floor": 0.0, "floor_mode": "drop", "eigenvalues": "host"},
}


def recipe_fingerprint(config, *, legacy: bool = False) -> str:
  """What the recorded results depend on besides the function: data, model, training, seeds,
  features. A store's results are only comparable under one recipe. `legacy`: the
  fingerprint stores got before where the data lives was left out of it."""
  parts = {key: config[key].to_dict() for key in ("dataset", "model", "train", "fisher")}
  if not legacy:
    for name in train.DATA_LOCATION:  # where the data is: its fingerprint is the store's 'data'
      parts["dataset"].pop(name, None)
  for section, fields in _LATER_FIELDS.items():
    for name, neutral in fields.items():
      if name in parts[section] and parts[section][name] == neutral:
        del parts[section][name]
  parts["seeds"] = [int(seed) for seed in config.seeds]
  parts["seed"] = int(config.seed)
  parts["normalize"] = bool(config.population.normalize)
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_recipe(db: store_lib.Store, config, dataset=None, make_model=None) -> None:
  """Records the recipe, the data and the model in a new store; refuses a store whose results
  come from others (a resumed search must not mix them). Stores older than the data and model
  records get them on first use."""
  fingerprint = recipe_fingerprint(config)
  stored = db.set_meta_if_absent("recipe", fingerprint)
  if stored != fingerprint and stored == recipe_fingerprint(config, legacy=True):
    db.set_meta("recipe", fingerprint)  # a store from before data_dir left the recipe
  elif stored != fingerprint:
    raise store_lib.StoreError(
        f"{db.path} holds results of another training recipe (dataset, model, train, fisher, "
        f"seeds differ from this config's): {db.elsewhere}, or the config it was made with")
  if dataset is None:
    return
  for key, value, what in (
      ("data", dataset.fingerprint, f"on other data than {dataset.info.name!r}"),
      ("model", model_factory.identity(make_model, tuple(dataset.info.input_shape)),
       "with another model")):
    stored = db.set_meta_if_absent(key, value)
    if stored != value:
      raise store_lib.StoreError(
          f"{db.path} holds results computed {what}: the {key} changed since (recorded "
          f"{stored!r}, now {value!r}). Use another --workdir, or the {key} the store was "
          "made with.")


class TrainableNames(Sequence):
  """The member of each class that the population program trains, found on first use (a
  space of a million classes is not parsed up front): the first one that fits the training
  schema (relu(x)'s class trains as add(relu(x),zero(x)) in the benchmark space; the two
  compute the same values), else the representative."""

  def __init__(self, classes: Sequence[list[str]], schema: str):
    self.classes = classes
    self.encoding = population.Encoding.for_space(schema) if schema else None
    self._found: dict[int, str] = {}

  def __len__(self) -> int:
    return len(self.classes)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    index = int(index)
    if index not in self._found:
      self._found[index] = self._trainable(self.classes[index])
    return self._found[index]

  def _trainable(self, members: list[str]) -> str:
    if self.encoding is None:
      return members[0]
    for name in members:
      try:
        self.encoding.encode([name])
      except ExpressionError:
        continue
      return name
    return members[0]


def trainable_names(classes: Sequence[list[str]], schema: str) -> TrainableNames:
  """The member of each class that the population program trains (TrainableNames)."""
  return TrainableNames(classes, schema)


def make_strategy(config, candidates, layout: np.ndarray | None):
  name = config.search.strategy
  options = {}
  if name in strategies.SURROGATE_STRATEGIES:
    options = {"embedding": layout, "feature_set": config.surrogate.features,
               "neighbors": int(config.surrogate.neighbors)}
  if name in ("evolution", "aquasurf-local"):  # mutations stay within the space's operators
    options["choices"] = operator_choices(config)
  return strategies.make_strategy(name, candidates, seed=int(config.seed), **options)


def history_of(db: store_lib.Store) -> dict[int, float]:
  """class id -> median validation accuracy (NaN for failures), in evaluation order: the
  classes trained in full, what strategies learn from. Those successive halving stopped early
  are left out (`split_history`)."""
  return split_history(db.evaluations())[0]


def split_history(evaluations) -> tuple[dict[int, float], set[int]]:
  """(history as `history_of`, the ids of the classes stopped early) of evaluations."""
  history, stopped = {}, set()
  for cid, ev in evaluations.items():
    if ev.status == "stopped":
      stopped.add(cid)
    else:
      history[cid] = (ev.metrics.get("validation_accuracy", math.nan) if ev.status == "ok"
                      else math.nan)
  return history, stopped


def evaluations_from(result: train.PopulationResult, class_ids: Sequence[int],
                     names: Sequence[str], worker: str) -> list[store_lib.Evaluation]:
  """One store record per trained class, as `PopulationResult.by_activation` sums it up (means
  over folds, medians over seeds), with its learning curves (`store.curve_key`) and the
  epochs it trained; failed when that says diverged (config.train.divergence) or the
  validation accuracy is missing; stopped when successive halving stopped it early."""
  summaries = result.by_activation()
  members = result.members()
  out = []
  for cid, name in zip(class_ids, names):
    summary = summaries[name]
    metrics = {k: float(v) for k, v in summary.items()
               if k.endswith(("_accuracy", "_loss")) and isinstance(v, float)}
    if "epochs" in summary:
      metrics["epochs"] = float(summary["epochs"])
    for curve in (*train.CURVES, "failed"):
      for epoch, value in enumerate(summary.get(f"{curve}_curve", ()), 1):
        metrics[store_lib.curve_key(curve, epoch)] = float(value)
    failed = summary["diverged"] or not math.isfinite(metrics.get("validation_accuracy",
                                                                  math.nan))
    status = "failed" if failed else "stopped" if summary.get("stopped") else "ok"
    out.append(store_lib.Evaluation(
        class_id=int(cid), status=status, metrics=metrics,
        per_seed=[m for m in members if m["activation"] == name],
        runtime_s=float(summary["runtime_s"]), worker=worker, finished_at=time.time()))
  return out


@dataclasses.dataclass
class SearchSummary:
  """What a search (or benchmark) run left in its store."""
  classes: list[list[str]]
  evaluations: dict[int, store_lib.Evaluation]
  candidates: strategies.Candidates | None = None
  embedding: np.ndarray | None = None
  provenance: dict[str, str] = dataclasses.field(default_factory=dict)  # the store's


@dataclasses.dataclass
class RoundInfo:
  """What a round of a search leaves, for whoever watches it (an observer's `round`)."""
  classes: list[list[str]]
  evaluations: dict[int, store_lib.Evaluation]  # the store's, every worker's
  trained: list[int]  # the classes this round trained
  result: train.PopulationResult
  wall_s: float  # the round's training time
  embedding: np.ndarray | None  # the surrogate's layout of the classes (NaN rows: not placed)
  # Leave-one-out Spearman of the surrogate over the evaluated classes trained in full (NaN
  # while too few, or without a layout): is it getting better?
  surrogate_spearman: float
  provenance: dict[str, str]  # where the results are and what they depend on (fingerprints)


def run(config, workdir: str, *, exhaustive: bool = False, progress: bool = True,
        dataset=None, make_model=None, observer=None) -> SearchSummary:
  """Searches config.search.space with config.search.strategy until config.search.budget
  classes are evaluated in the store (or, `exhaustive`, every class in id order: a benchmark).

  `dataset` (e.g. `data.from_arrays(...)`) and `make_model` (act -> flax Module) replace
  config.dataset's and config.model's; the store records both and refuses others later.
  `observer` (process 0's only; e.g. report.live.LiveReport) sees the search as it goes: its
  `epoch(names, seeds, epoch, record, fold=)` after every epoch trained (train_population's
  on_epoch) and `round(RoundInfo)` after every round recorded; what it raises is logged and
  never stops the search.
  Returns the store's classes and evaluations (this worker's and everyone else's).
  """
  if not workdir:
    raise ValueError("a search needs --workdir: its store, checkpoints and results live there")
  config = defaults.complete(config)
  fidelity = None if exhaustive else halving.Fidelity.from_config(config)
  # The data and the model are checked before anything is written to the workdir.
  dataset, make_model = train.task(config, dataset, make_model)
  os.makedirs(workdir, exist_ok=True)
  cfg = config.search
  train_config = training_config(config)
  schema = str(train_config.population.schema)
  worker = cfg.worker or default_worker()
  ttl = float(cfg.claim_ttl_s)
  lead = jax.process_index() == 0
  with open_store(config, workdir) as db:
    # Every process keeps the space and the features (the same values everywhere: idempotent
    # on a shared workdir); only process 0 claims and records.
    init_space(db, config)
    check_recipe(db, config, dataset, make_model)
    if exhaustive and any(ev.status == "stopped" for ev in db.evaluations().values()):
      raise store_lib.StoreError(
          f"{db.location} holds functions successive halving stopped early (a search's); a "
          "benchmark table needs every function trained in full: use another --workdir")
    if lead and db.replay_journal():  # results a killed process journaled but never committed
      logging.info("replayed evaluations from %s", db.journal_path)
    classes = db.classes()
    logging.info("%d classes of the space %s in %s", len(classes), cfg.space, db.location)
    names = trainable_names(classes, schema)
    if lead:  # a population whose classes are all recorded is never trained again
      recorded = db.evaluated_ids()
      train.remove_checkpoints(
          workdir, lambda trained: all(db.class_of(name) in recorded for name in trained))
    budget = None if exhaustive else featurize.Plan.from_config(config)
    if budget is None:  # every class's features (a benchmark table holds them all)
      candidates = compute_features(train_config, db, names, dataset, make_model=make_model,
                                    progress=progress, worker=worker, ttl_s=ttl)
      layout = embedding(config, db, candidates)  # aquasurf's, and the map's in any case
    else:  # the baselines' and a budget's rounds (featurize.py), as evaluations come in
      budget = BudgetedFeatures(train_config, db, classes, names, dataset,
                                make_model=make_model, progress=progress, worker=worker,
                                ttl_s=ttl)
      candidates, layout = budget.candidates, None
    total = len(classes) if exhaustive else min(int(cfg.budget), len(classes))
    per_round = max(int(cfg.population_size), 1)
    strategy = None
    early = 0  # rounds a budget takes before they are due: the strategy ran short
    bar = progress_bar(total=total, initial=min(len(db.evaluated_ids()), total),
                       desc="benchmark" if exhaustive else f"search ({cfg.strategy})",
                       unit="fn", disable=not progress)
    while True:
      history, stopped = split_history(db.evaluations()) if lead else (None, set())
      if budget is not None:  # every process computes the features; the lead decides
        rounds, = broadcast_ids([budget.rounds_wanted(history, early) if lead else 0], 1)
        if budget.advance(rounds, history):
          layout = budget.layout
          strategy = None
      if strategy is None and not exhaustive:
        strategy = make_strategy(config, candidates, layout)
      ids, grow = [], 0
      if lead:
        others = {c for c, w in db.claimed_ids().items()
                  if w != worker and not is_dead_worker(w)}
        # Others' classes count too, and those stopped early: each was trained.
        want = min(per_round, total - len(history) - len(stopped) - len(others))
        if want > 0:
          if exhaustive:
            proposal = [i for i in range(len(classes)) if i not in history and i not in others]
          else:  # a stopped class is never proposed again, nor learnt from
            proposal = strategy.propose(history, want, exclude=others | stopped)
          if budget is not None and len(proposal) < want and len(budget.picks) < (
              budget.plan.rounds):
            early, grow = early + 1, 1  # too few featured classes left: the next round now
          else:
            ids = db.claim(proposal, want, worker, ttl, dead=is_dead_worker)
          if not grow and not ids and db.claimed_ids():
            if not exhaustive:
              logging.info("every remaining class is claimed by other workers; waiting")
              time.sleep(min(ttl, 5.0))
              continue
            # A benchmark's last classes are others': the worker that records the last one
            # writes the table (modes.run_benchmark); this one stops here.
            holders = sorted(set(db.claimed_ids().values()))
            logging.info("the remaining %d classes are being trained by %s; the table is "
                         "written by whichever worker records the last one",
                         len(db.claimed_ids()), ", ".join(holders))
      grow, *ids = broadcast_ids([grow, *ids], per_round + 1)
      if grow:
        continue
      if not ids:
        break
      logging.info("training %d functions x %d seeds: %s", len(ids), len(train_config.seeds),
                   ", ".join(names[i] for i in ids))
      started = time.perf_counter()
      watching = observer if lead else None
      with heartbeat(db if lead else None, worker, ttl, {(store_lib.TRAIN, i) for i in ids}):
        result = train.train_population(train_config, [names[i] for i in ids],
                                        list(train_config.seeds), workdir=workdir,
                                        dataset=dataset, make_model=make_model,
                                        progress=progress, fidelity=fidelity,
                                        on_epoch=_guarded(watching, "epoch"))
      if lead:
        _record(train_config, db, result, ids, [names[i] for i in ids], worker, workdir,
                dataset, make_model)
      if watching is not None:
        evaluations = db.evaluations()
        _guarded(watching, "round")(RoundInfo(
            classes, evaluations, list(ids), result, time.perf_counter() - started, layout,
            _surrogate_spearman(layout, evaluations), provenance(db)))
      bar.update(len(ids))
    bar.close()
    return SearchSummary(classes, db.evaluations(), candidates, layout, provenance(db))


def _guarded(observer, method: str):
  """observer.method, logging what it raises instead (watching never stops a search); None
  without an observer."""
  if observer is None:
    return None
  function = getattr(observer, method)

  def call(*args, **kwargs):
    try:
      function(*args, **kwargs)
    except Exception:  # pylint: disable=broad-except
      logging.exception("watching the search failed in %s.%s; the search goes on",
                        type(observer).__name__, method)
  return call


def provenance(db) -> dict[str, str]:
  """Where a store is and the fingerprints of what its results depend on."""
  return {"store": str(db.location), **{f"{key} fingerprint": str(value)
                                        for key, value in db.fingerprints().items() if value}}


def _surrogate_spearman(layout: np.ndarray | None, evaluations) -> float:
  """The surrogate's leave-one-out Spearman over the classes trained in full (NaN without a
  layout or with too few)."""
  history, _ = split_history(evaluations)
  if layout is None or not history:
    return math.nan
  ids = np.fromiter(history, int)
  return surrogate.leave_one_out_spearman(np.asarray(layout, np.float64)[ids],
                                          [history[i] for i in ids])


def recover(config, workdir: str, *, dataset=None, make_model=None) -> dict:
  """`--config.mode=recover`: a damaged store rebuilt for config's space from its journal and
  what the file still holds (recovery.rebuild); an intact one (or a database) gets any
  journaled evaluation of this search it lacks. Returns what was done."""
  config = defaults.complete(config)
  dataset, make_model = train.task(config, dataset, make_model)
  fingerprints = {"recipe": recipe_fingerprint(config), "data": dataset.fingerprint,
                  "model": model_factory.identity(make_model, tuple(dataset.info.input_shape))}
  path = store_path(workdir)
  if not config.search.store and not os.path.exists(path) and not os.path.exists(
      journal.path_of(path)):
    raise store_lib.StoreError(f"nothing to recover in {workdir}: no {STORE_NAME} and no "
                               "journal")
  if config.search.store or not recovery.is_damaged(path):
    with open_store(config, workdir) as db:
      init_space(db, config)
      check_recipe(db, config, dataset, make_model)
      return {"intact": True, "location": db.location, "from_journal": db.replay_journal()}
  report = recovery.rebuild(path, config.search.space, space_classes(config), **fingerprints)
  return {"intact": False, "location": path, **report}


def _record(config, db, result, ids, names, worker, workdir, dataset, make_model) -> None:
  """Records a trained population; a class another worker recorded first keeps that result,
  and this one goes to the workdir's search.set-aside.jsonl (never recorded twice)."""
  evaluations = evaluations_from(result, ids, names, worker)
  for evaluation, recorded in zip(evaluations, db.record_many(evaluations)):
    if not recorded:
      record = db.journal_line(evaluation, names[ids.index(evaluation.class_id)],
                                db.fingerprints())
      journal.append(os.path.join(workdir, SET_ASIDE), record)
      logging.warning("class %d (%s) was recorded by another worker first; this worker's "
                      "result is kept aside in %s", evaluation.class_id, record["name"],
                      os.path.join(workdir, SET_ASIDE))
  # The checkpoints of a recorded population are never needed again, nor those of its rungs'
  # smaller populations (successive halving).
  for directory in train.checkpoint_directories(config, names, list(config.seeds), workdir,
                                                dataset=dataset, make_model=make_model):
    shutil.rmtree(directory, ignore_errors=True)
  if halving.Fidelity.from_config(config) is not None:
    recorded = db.evaluated_ids()
    train.remove_checkpoints(
        workdir, lambda trained: all(db.class_of(name) in recorded for name in trained))
