"""The search loop: propose, train a population, record, refit, until the budget is spent.

    from actbench import search
    summary = search.run(config, workdir)      # config.mode = 'search' (configs/quickstart.py)

Everything a search knows lives in the store (`workdir/search.sqlite`, store.py): the
space's equivalence classes, their output and Fisher features, every finished evaluation and
the classes other workers are evaluating now. A killed search restarted with the same command
keeps every finished result, proposes the same population again (proposals are deterministic
given the store) and resumes its training from the last checkpoint. Several workers may share
one store: each claims the classes it trains, for the whole equivalence class.

Multi-host (a TPU pod): every process runs the same loop; process 0 owns the store and
broadcasts its proposals, so all processes train the same population together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import socket
import threading
import time
import _thread
from collections.abc import Sequence

from absl import logging
import jax
import numpy as np

from actbench import defaults, processes
from actbench.engine import model_factory, population, train
from actbench.expr import features, operators, space
from actbench.expr.expression import ExpressionError, parse
from actbench.search import journal, recovery
from actbench.search import store as store_lib
from actbench.search import strategies, surrogate

STORE_NAME = store_lib.FILE_NAME
OUTPUTS = "outputs"  # feature kinds in the store
FISHER = "fisher"
SET_ASIDE = "search.set-aside.jsonl"  # results of classes another worker recorded first


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


def baseline_names(config) -> list[str]:
  """The functions every search starts with (config.search.baselines, or METHOD.md's 8), in
  their normal spelling: `add(relu(x), tanh(x))` is `add(relu(x),tanh(x))`, the name its class
  is trained and recorded under."""
  names = config.search.baselines or [f"{b}(x)" for b in operators.BASELINES]
  return list(dict.fromkeys(str(parse(str(n))) for n in names))


def space_classes(config) -> list[list[str]]:
  """The equivalence classes of config.search.space plus the baselines (a baseline outside the
  space is a class of its own), representative first, in enumeration order."""
  cfg = config.search
  names = space.enumerate(cfg.space, unary=cfg.unary or None, binary=cfg.binary or None,
                          nary=cfg.nary or None)
  return space.equivalence_classes(list(names) + baseline_names(config))


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


def trainable_names(classes: Sequence[list[str]], schema: str) -> list[str]:
  """The member of each class that the population program trains: the first one that fits the
  training schema (relu(x)'s class trains as add(relu(x),zero(x)) in the benchmark space; the
  two compute the same values), else the representative."""
  if not schema:
    return [members[0] for members in classes]
  encoding = population.Encoding.for_space(schema)
  chosen = []
  for members in classes:
    for name in members:
      try:
        encoding.encode([name])
      except ExpressionError:
        continue
      chosen.append(name)
      break
    else:
      chosen.append(members[0])
  return chosen


def _progress(iterable=None, **kwargs):
  """A tqdm bar on process 0 (ETA included); silent elsewhere and when disabled."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  disable = kwargs.pop("disable", False) or jax.process_index() != 0
  return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)


def compute_features(config, db: store_lib.SearchStore, names: Sequence[str], dataset, *,
                     make_model=None, progress: bool = True, worker: str = "",
                     ttl_s: float = 600.0) -> strategies.Candidates:
  """Output and Fisher features of every class, computed where the store lacks them and
  stored chunk by chunk (a killed run keeps finished chunks). Fisher chunks are claimed like
  training (the store's task 'fisher'): workers sharing the store compute each class's
  features once, and wait for the chunks others hold. Functions whose outputs are not finite
  are no candidates (METHOD.md section 4): they get NaN Fisher rows without training."""
  classes = db.classes()
  normalize = bool(config.population.normalize)
  outputs, present = db.features(OUTPUTS)
  if not present.all():  # cheap: every worker may compute them
    outputs = features.outputs([members[0] for members in classes], normalize=normalize)
    db.put_features(OUTPUTS, range(len(classes)), outputs)
  finite = np.isfinite(outputs).all(axis=1)
  width, present = db.feature_presence(FISHER)  # the rows themselves are read once, below
  missing = _finite_first(present, finite)
  chunk = max(int(config.search.features_chunk), 1)
  worker = worker or default_worker()
  lead = jax.process_index() == 0
  computed, waited = 0, False
  bar = _progress(total=len(classes), initial=len(classes) - int(missing.size),
                  desc="Fisher features", unit="fn", disable=not progress or not missing.size)
  while missing.size:
    status, ids = 0, []
    if lead:
      ids = db.claim(missing.tolist(), chunk, worker, ttl_s, dead=is_dead_worker, task=FISHER)
      if ids and not finite[ids].any() and not width:
        db.release(ids, worker, task=FISHER)  # NaN rows of a width no worker has found yet
        ids = []
      status = 1 if ids else 2
    status, *ids = _broadcast_ids([status, *ids], chunk + 1)
    if status == 2:  # the rest is claimed by other workers: wait for their rows
      if not waited:
        holders = sorted(set(db.claimed_ids(task=FISHER).values()))
        logging.info("the remaining %d Fisher features are being computed by %s; waiting",
                     missing.size, ", ".join(holders) or "other workers")
        waited = True
      time.sleep(min(ttl_s, 2.0))
    else:
      with _heartbeat(db if lead else None, worker, ttl_s, {(FISHER, i) for i in ids}):
        block = _fisher_rows(config, [names[i] for i in ids], finite[ids], width, dataset,
                             make_model)
      db.put_features(FISHER, ids, block)  # and drops the claims
      computed += len(ids)
    width, present = db.feature_presence(FISHER)
    bar.update(int(present.sum()) - bar.n)
    missing = _finite_first(present, finite)
    if not finite[missing].any() and not width:
      break  # no function of the space has finite outputs: no Fisher features at all
  bar.close()
  if computed or waited:
    logging.info("computed %d Fisher features in this worker (%s)", computed, worker)
  fisher_rows, _ = db.features(FISHER)
  return strategies.Candidates(classes=classes, outputs=np.asarray(outputs, np.float32),
                               fisher=np.asarray(fisher_rows, np.float32),
                               schema=config.search.space, baselines=tuple(baseline_names(config)))


def _finite_first(present: np.ndarray, finite: np.ndarray) -> np.ndarray:
  """The classes without Fisher rows, those with finite outputs first (the first chunk
  computed sets the rows' width)."""
  missing = np.flatnonzero(~present)
  return np.concatenate([missing[finite[missing]], missing[~finite[missing]]])


def _fisher_rows(config, names, finite, width, dataset, make_model) -> np.ndarray:
  """Fisher features of `names` (rows `width` wide when none is computed), NaN rows where the
  outputs are not finite or the features failed."""
  from actbench import fisher  # pylint: disable=import-outside-toplevel
  todo = [name for name, ok in zip(names, finite) if ok]
  if not todo:
    return np.full((len(names), width), np.nan, np.float32)
  result = fisher.features(config, todo, dataset=dataset, make_model=make_model)
  if result.failed:
    logging.info("%d of %d functions have no Fisher features, e.g. %s: %s",
                 len(result.failed), len(todo), *_first_failure(result))
  block = np.full((len(names), result.features.shape[1]), np.nan, np.float32)
  block[np.asarray(finite, bool)] = result.features
  return block


def _first_failure(result) -> tuple[str, str]:
  index, reason = next(iter(result.failed.items()))
  return result.names[index], reason


def embedding_kind(config) -> str:
  """The store's feature kind holding the surrogate's embedding for config.surrogate."""
  return f"embedding-{config.surrogate.features}-{int(config.surrogate.random_state)}"


def embedding(config, db: store_lib.Store, candidates) -> np.ndarray:
  """The surrogate's embedding of every class, computed once and kept in the store (UMAP is
  the slowest step of a refit; the embedding does not depend on the evaluations)."""
  feature_set = config.surrogate.features
  random_state = int(config.surrogate.random_state)
  kind = embedding_kind(config)
  stored, present = db.features(kind)
  if present.all() and stored.shape[1]:
    return stored
  logging.info("embedding %d classes (%s features)", len(candidates.classes), feature_set)
  values = surrogate.embed(candidates, feature_set, random_state=random_state)
  db.put_features(kind, range(len(candidates.classes)), values)
  return values


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
  """class id -> median validation accuracy (NaN for failures), in evaluation order."""
  return {cid: (ev.metrics.get("validation_accuracy", math.nan) if ev.status == "ok"
                else math.nan) for cid, ev in db.evaluations().items()}


def evaluations_from(result: train.PopulationResult, class_ids: Sequence[int],
                     names: Sequence[str], worker: str) -> list[store_lib.Evaluation]:
  """One store record per trained class, as `PopulationResult.by_activation` sums it up (means
  over folds, medians over seeds); failed when that says diverged (config.train.divergence) or
  the validation accuracy is missing."""
  summaries = result.by_activation()
  members = result.members()
  out = []
  for cid, name in zip(class_ids, names):
    summary = summaries[name]
    metrics = {k: float(v) for k, v in summary.items()
               if k.endswith(("_accuracy", "_loss")) and isinstance(v, float)}
    failed = summary["diverged"] or not math.isfinite(metrics.get("validation_accuracy",
                                                                  math.nan))
    out.append(store_lib.Evaluation(
        class_id=int(cid), status="failed" if failed else "ok", metrics=metrics,
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


def _broadcast_ids(ids: list[int], size: int) -> list[int]:
  """Process 0's class ids, on every process (multi-host pods train one population)."""
  if jax.process_count() == 1:
    return ids
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  padded = np.full(size, -1, np.int64)
  padded[:len(ids)] = ids
  padded = multihost_utils.broadcast_one_to_all(padded)
  return [int(i) for i in np.asarray(padded) if i >= 0]


def default_worker() -> str:
  """This process's name in the store: host, JAX process index and pid, so that every process
  is a worker of its own (two searches on one host never share claims or checkpoints)."""
  return f"{socket.gethostname()}:p{jax.process_index()}:pid{os.getpid()}"


_DEFAULT_WORKER = re.compile(r"(?P<host>.+):p\d+:pid(?P<pid>\d+)")


def is_dead_worker(worker: str) -> bool:
  """Whether `worker` is a default-named worker of this host whose process has ended (a killed
  search): its claims are taken over at once instead of after config.search.claim_ttl_s."""
  match = _DEFAULT_WORKER.fullmatch(worker)
  return bool(match and match["host"] == socket.gethostname()
              and not processes.pid_alive(int(match["pid"])))


def run(config, workdir: str, *, exhaustive: bool = False, progress: bool = True,
        dataset=None, make_model=None) -> SearchSummary:
  """Searches config.search.space with config.search.strategy until config.search.budget
  classes are evaluated in the store (or, `exhaustive`, every class in id order: a benchmark).

  `dataset` (e.g. `data.from_arrays(...)`) and `make_model` (act -> flax Module) replace
  config.dataset's and config.model's; the store records both and refuses others later.
  Returns the store's classes and evaluations (this worker's and everyone else's).
  """
  if not workdir:
    raise ValueError("a search needs --workdir: its store, checkpoints and results live there")
  config = defaults.complete(config)
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
    db.init_space(cfg.space, space_classes(config))
    check_recipe(db, config, dataset, make_model)
    if lead and db.replay_journal():  # results a killed process journaled but never committed
      logging.info("replayed evaluations from %s", db.journal_path)
    classes = db.classes()
    names = trainable_names(classes, schema)
    if lead:  # a population whose classes are all recorded is never trained again
      recorded, class_of = db.evaluated_ids(), {name: i for i, name in enumerate(names)}
      train.remove_checkpoints(
          workdir, lambda trained: all(class_of.get(name) in recorded for name in trained))
    candidates = compute_features(train_config, db, names, dataset, make_model=make_model,
                                  progress=progress, worker=worker, ttl_s=ttl)
    total = len(classes) if exhaustive else min(int(cfg.budget), len(classes))
    per_round = max(int(cfg.population_size), 1)
    layout = embedding(config, db, candidates)  # aquasurf's, and the map's in any case
    strategy = None if exhaustive else make_strategy(config, candidates, layout)
    bar = _progress(total=total, initial=min(len(db.evaluated_ids()), total),
                    desc="benchmark" if exhaustive else f"search ({cfg.strategy})",
                    unit="fn", disable=not progress)
    while True:
      ids = []
      if lead:
        history = history_of(db)
        others = {c for c, w in db.claimed_ids().items()
                  if w != worker and not is_dead_worker(w)}
        want = min(per_round, total - len(history) - len(others))  # others' count too
        if want > 0:
          if exhaustive:
            proposal = [i for i in range(len(classes)) if i not in history and i not in others]
          else:
            proposal = strategy.propose(history, want, exclude=others)
          ids = db.claim(proposal, want, worker, ttl, dead=is_dead_worker)
          if not ids and db.claimed_ids():
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
      ids = _broadcast_ids(ids, per_round)
      if not ids:
        break
      logging.info("training %d functions x %d seeds: %s", len(ids), len(train_config.seeds),
                   ", ".join(names[i] for i in ids))
      with _heartbeat(db if lead else None, worker, ttl, {(store_lib.TRAIN, i) for i in ids}):
        result = train.train_population(train_config, [names[i] for i in ids],
                                        list(train_config.seeds), workdir=workdir,
                                        dataset=dataset, make_model=make_model,
                                        progress=progress)
      if lead:
        _record(train_config, db, result, ids, [names[i] for i in ids], worker, workdir,
                dataset, make_model)
      bar.update(len(ids))
    bar.close()
    return SearchSummary(classes, db.evaluations(), candidates, layout)


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
      db.init_space(config.search.space, space_classes(config))
      check_recipe(db, config, dataset, make_model)
      return {"intact": True, "location": db.location, "from_journal": db.replay_journal()}
  report = recovery.rebuild(path, config.search.space, space_classes(config), **fingerprints)
  return {"intact": False, "location": path, **report}


@contextlib.contextmanager
def _heartbeat(db: store_lib.SearchStore | None, worker: str, ttl: float,
               held: set[tuple[str, int]]):
  """Keeps this worker's claims (`held`: (task, class id) pairs) alive while it works (a
  population may outlast the claim time-to-live); a killed worker stops beating and its
  claims expire. Its own connection: connections belong to one thread.

  A heartbeat that fails (the store refused, or unreachable for config.search.store_retry_s)
  stops the work with a StoreError saying so: the claims would expire and another worker
  redo the work. Claims another worker took over while this one was cut off are logged once:
  whichever result is recorded first stays, the other is kept aside."""
  if db is None:
    yield
    return
  stop, failures = threading.Event(), []

  def beat():
    warned = False
    try:
      with db.reopen() as own:
        while not stop.wait(max(ttl / 3, 1.0)):
          lost = held - own.heartbeat(worker, ttl)
          if lost and not warned:
            logging.warning("%d claims of this worker (%s) were taken over while it was cut "
                            "off: the first result recorded for each class stays, the other "
                            "goes to %s", len(lost), worker, SET_ASIDE)
            warned = True
    except BaseException as e:  # pylint: disable=broad-except  # reported in the main thread
      failures.append(e)
      if not stop.is_set():
        _thread.interrupt_main()

  thread = threading.Thread(target=beat, daemon=True, name="actbench-heartbeat")
  thread.start()
  try:
    yield
  except KeyboardInterrupt as e:
    if failures:
      raise store_lib.StoreError(
          f"stopped: the heartbeat that keeps this worker's claims alive failed ({failures[0]}); "
          "its classes are trained again by the next run, or by another worker once the "
          "claims expire") from e
    raise
  finally:
    stop.set()
    thread.join()


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
  # The checkpoints of a recorded population are never needed again.
  for directory in train.checkpoint_directories(config, names, list(config.seeds), workdir,
                                                dataset=dataset, make_model=make_model):
    shutil.rmtree(directory, ignore_errors=True)
