"""The features of a search's classes, kept in its store: output features, Fisher features
(claimed chunk by chunk, so that workers sharing a store compute each once) and the
surrogate's embedding.

    candidates = compute_features(config, db, names, dataset)   # every class (fisher_budget 0)
    budget = BudgetedFeatures(config, db, classes, names, dataset)  # a budget, in rounds
    budget.advance(rounds); budget.layout

With config.search.fisher_budget > 0 (featurize.py), only the baselines and the classes the
rounds pick get Fisher features; every class gets an output sketch (16 numbers) instead of its
1,000 output features, and the embedding covers the featured classes alone. Every step is
stored as it finishes: a killed search redoes no finished chunk and no finished round.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence

from absl import logging
import jax
import numpy as np

from actbench.expr import features, operators
from actbench.expr.expression import parse
from actbench.search import featurize
from actbench.search import store as store_lib
from actbench.search import strategies, surrogate
from actbench.search.workers import (broadcast_ids, default_worker, heartbeat, is_dead_worker,
                                     progress_bar)

OUTPUTS = "outputs"  # feature kinds in the store
FISHER = "fisher"
SKETCH = "outputs-sketch"  # featurize.sketch_of: what a budget's rounds rank classes by
ROUND_KEY = "featurize.round.{}"  # meta: a budget's round r, its picks (JSON)
_SKETCH_CHUNK = 16384  # classes sketched and stored at a time


def baseline_names(config) -> list[str]:
  """The functions every search starts with (config.search.baselines, or METHOD.md's 8), in
  their normal spelling: `add(relu(x), tanh(x))` is `add(relu(x),tanh(x))`, the name its class
  is trained and recorded under."""
  names = config.search.baselines or [f"{b}(x)" for b in operators.BASELINES]
  return list(dict.fromkeys(str(parse(str(n))) for n in names))


def compute_features(config, db: store_lib.SearchStore, names: Sequence[str], dataset, *,
                     make_model=None, progress: bool = True, worker: str = "",
                     ttl_s: float = 600.0) -> strategies.Candidates:
  """Output and Fisher features of every class, computed where the store lacks them and
  stored chunk by chunk (a killed run keeps finished chunks). Functions whose outputs are not
  finite are no candidates (METHOD.md section 4): they get NaN Fisher rows without training."""
  classes = db.classes()
  normalize = bool(config.population.normalize)
  outputs, present = db.features(OUTPUTS)
  if not present.all():  # cheap: every worker may compute them
    outputs = features.outputs([members[0] for members in classes], normalize=normalize)
    db.put_features(OUTPUTS, range(len(classes)), outputs)
  finite = np.isfinite(outputs).all(axis=1)
  fisher_features(config, db, names, finite, dataset, make_model=make_model, progress=progress,
                  worker=worker, ttl_s=ttl_s)
  fisher_rows, _ = db.features(FISHER)
  return strategies.Candidates(classes=classes, outputs=np.asarray(outputs, np.float32),
                               fisher=np.asarray(fisher_rows, np.float32),
                               schema=config.search.space, baselines=tuple(baseline_names(config)))


def fisher_features(config, db: store_lib.SearchStore, names: Sequence[str], finite: np.ndarray,
                    dataset, *, subset: Sequence[int] | None = None, make_model=None,
                    progress: bool = True, worker: str = "", ttl_s: float = 600.0) -> int:
  """Computes and stores the Fisher features of the classes of `subset` (default: all) that
  the store lacks; returns how many this worker computed. Chunks are claimed like training
  (the store's task 'fisher'): workers sharing the store compute each class's features once,
  and wait for the chunks others hold. `finite`: the classes whose outputs are finite (the
  others get NaN rows)."""
  wanted = np.ones(len(finite), bool)
  if subset is not None:
    wanted = np.zeros(len(finite), bool)
    wanted[np.asarray(subset, np.int64)] = True
  width, present = db.feature_presence(FISHER)  # the rows themselves are read by the caller
  missing = _finite_first(present, finite, wanted)
  chunk = max(int(config.search.features_chunk), 1)
  worker = worker or default_worker()
  lead = jax.process_index() == 0
  computed, waited = 0, False
  total = int(wanted.sum())
  bar = progress_bar(total=total, initial=total - int(missing.size), desc="Fisher features",
                     unit="fn", disable=not progress or not missing.size)
  while missing.size:
    status, ids = 0, []
    if lead:
      ids = db.claim(missing.tolist(), chunk, worker, ttl_s, dead=is_dead_worker, task=FISHER)
      if ids and not finite[ids].any() and not width:
        db.release(ids, worker, task=FISHER)  # NaN rows of a width no worker has found yet
        ids = []
      status = 1 if ids else 2
    status, *ids = broadcast_ids([status, *ids], chunk + 1)
    if status == 2:  # the rest is claimed by other workers: wait for their rows
      if not waited:
        holders = sorted(set(db.claimed_ids(task=FISHER).values()))
        logging.info("the remaining %d Fisher features are being computed by %s; waiting",
                     missing.size, ", ".join(holders) or "other workers")
        waited = True
      time.sleep(min(ttl_s, 2.0))
    else:
      with heartbeat(db if lead else None, worker, ttl_s, {(FISHER, i) for i in ids}):
        block = _fisher_rows(config, [names[i] for i in ids], finite[ids], width, dataset,
                             make_model)
      db.put_features(FISHER, ids, block, compress=True)  # and drops the claims
      computed += len(ids)
    width, present = db.feature_presence(FISHER)
    bar.update(int((present & wanted).sum()) - bar.n)
    missing = _finite_first(present, finite, wanted)
    if not finite[missing].any() and not width:
      break  # no function of the subset has finite outputs: no Fisher features at all
  bar.close()
  if computed or waited:
    logging.info("computed %d Fisher features in this worker (%s)", computed, worker)
  return computed


def _finite_first(present: np.ndarray, finite: np.ndarray, wanted: np.ndarray) -> np.ndarray:
  """The wanted classes without Fisher rows, those with finite outputs first (the first chunk
  computed sets the rows' width)."""
  missing = np.flatnonzero(~present & wanted)
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


LATEST_EMBEDDING = "featurize.latest-embedding"  # meta: the kind of a budget's latest layout


def budget_embedding_kind(config, featured: Sequence[int]) -> str:
  """The kind holding a budgeted search's embedding of the classes `featured`: one kind per
  featured set (its digest), written whole in one transaction, so that workers laying out
  other sets never mix their rows."""
  digest = hashlib.sha256(json.dumps(sorted(featured)).encode()).hexdigest()[:16]
  return f"{embedding_kind(config)}-budget-{digest}"


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


def stored_embedding(config, db: store_lib.SearchStore) -> np.ndarray | None:
  """The embedding a search left in its store (every class's, or a budget's latest over its
  featured classes, NaN elsewhere), for the report; None without one."""
  for kind in (embedding_kind(config), db.get_meta(LATEST_EMBEDDING)):
    if kind:
      rows, present = db.features(kind)
      if rows.shape[1] and present.any():
        return rows
  return None


def sketches(config, db: store_lib.SearchStore, classes: Sequence[Sequence[str]], *,
             progress: bool = True) -> np.ndarray:
  """Every class's output sketch (featurize.sketch_of: 16 float32, NaN where the outputs are
  not finite), computed where the store lacks it, streamed and stored chunk by chunk: never
  the (classes x 1000) outputs in memory."""
  normalize = bool(config.population.normalize)
  _, present = db.feature_presence(SKETCH)
  missing = np.flatnonzero(~present)
  bar = progress_bar(total=len(classes), initial=len(classes) - len(missing),
                     desc="output sketches", unit="fn", disable=not progress or not len(missing))
  for start in range(0, len(missing), _SKETCH_CHUNK):
    ids = missing[start:start + _SKETCH_CHUNK]
    rows = np.concatenate([block for _, block in featurize.iter_sketches(
        (classes[i][0] for i in ids), normalize=normalize)])
    db.put_features(SKETCH, ids.tolist(), rows)
    bar.update(len(ids))
  bar.close()
  return db.features(SKETCH)[0]


class BudgetedFeatures:
  """The Fisher features of a search with config.search.fisher_budget > 0: the baselines' at
  once, then rounds of classes picked by featurize.Plan as evaluations come in.

  Each round's picks are stored (meta featurize.round.<r>, with the number of evaluations they
  were picked after) before its features are computed: a killed search, or another worker,
  computes the same round; the first worker to store a round's picks decides it.
  """

  def __init__(self, config, db: store_lib.SearchStore, classes: Sequence[Sequence[str]],
               names: Sequence[str], dataset, *, make_model=None, progress: bool = True,
               worker: str = "", ttl_s: float = 600.0):
    self.config, self.db, self.classes, self.names = config, db, classes, names
    self.dataset, self.make_model = dataset, make_model
    self.progress, self.worker, self.ttl_s = progress, worker, ttl_s
    self.plan = featurize.Plan.from_config(config)
    self.sketches = sketches(config, db, classes, progress=progress)
    self.finite = np.isfinite(self.sketches).all(axis=1)
    logging.info("output sketches of %d classes (%d finite); Fisher budget %d in rounds of %d "
                 "every %d evaluations", len(classes), int(self.finite.sum()),
                 self.plan.budget, self.plan.round_size, self.plan.every)
    # The classes the strategies choose among: names only, no features in memory.
    self.candidates = strategies.Candidates(
        classes=classes, outputs=np.zeros((len(classes), 0), np.float32),
        schema=config.search.space, baselines=tuple(baseline_names(config)))
    self.baselines = self.candidates.baseline_ids()
    self.picks: list[list[int]] = []
    self._read_rounds()
    self.layout: np.ndarray | None = None
    self._featured_done: tuple[int, ...] = ()

  def _read_rounds(self) -> None:
    while True:
      stored = self.db.get_meta(ROUND_KEY.format(len(self.picks)))
      if stored is None:
        return
      self.picks.append([int(i) for i in json.loads(stored)["ids"]])

  @property
  def featured(self) -> list[int]:
    """The baselines and every round's picks so far, in that order."""
    return featurize.featured_after(self.baselines, self.picks)

  def rounds_wanted(self, history: dict[int, float], extra: int = 0) -> int:
    """The rounds due after `history` (plus `extra` when the strategy ran short), at most the
    plan's."""
    return min(self.plan.rounds, max(self.plan.rounds_due(len(history)) + extra,
                                     len(self.picks)))

  def advance(self, rounds: int, history: dict[int, float] | None) -> bool:
    """Brings the featured classes to `rounds` rounds (picking the missing rounds from
    `history` where this process decides: `history` None on other processes of a pod, which
    read the lead's picks), computes their Fisher features and the embedding. Returns whether
    the embedding changed."""
    while len(self.picks) < rounds:
      r = len(self.picks)
      if history is not None:
        mask = np.zeros(len(self.classes), bool)
        mask[self.featured] = True
        ids = self.plan.pick(self.sketches, mask, history, r)
        record = {"ids": ids, "after": len(history), "choice": self.plan.choice}
        self.db.set_meta_if_absent(ROUND_KEY.format(r), json.dumps(record))
      broadcast_ids([1], 1)  # the lead's picks are stored before the others read them
      before = len(self.picks)
      self._read_rounds()
      if len(self.picks) == before:
        raise store_lib.StoreError(f"{self.db.location}: round {r} of the Fisher budget was "
                                   "not stored")
      logging.info("Fisher budget: round %d adds %d classes (%d featured of %d; %s choice)",
                   r, len(self.picks[r]), len(self.featured), len(self.classes),
                   self.plan.choice)
    featured = tuple(self.featured)
    if featured == self._featured_done and self.layout is not None:
      return False
    fisher_features(self.config, self.db, self.names, self.finite, self.dataset,
                    subset=featured, make_model=self.make_model, progress=self.progress,
                    worker=self.worker, ttl_s=self.ttl_s)
    self.layout = self._embedding(list(featured))
    self._featured_done = featured
    return True

  def _embedding(self, featured: list[int]) -> np.ndarray:
    """The surrogate's embedding of the featured classes (NaN rows elsewhere), kept in the
    store under the digest of the set it covers."""
    config, db = self.config, self.db
    kind = budget_embedding_kind(config, featured)
    rows, present = db.features(kind, featured)
    if present.all() and rows.shape[1]:
      return featurize.scatter(rows, featured, len(self.classes))
    fisher_rows, _ = db.features(FISHER, featured)
    normalize = bool(config.population.normalize)
    subset = strategies.Candidates(
        classes=[self.classes[i] for i in featured],
        outputs=features.outputs([self.classes[i][0] for i in featured], normalize=normalize),
        fisher=fisher_rows, schema=None, baselines=())
    feature_set = config.surrogate.features
    logging.info("embedding %d featured classes (%s features)", len(featured), feature_set)
    values = featurize.embed_subset(subset, feature_set, int(config.surrogate.random_state))
    db.put_features(kind, featured, values)  # whole, in one transaction
    db.set_meta(LATEST_EMBEDDING, kind)  # for the report
    return featurize.scatter(values, featured, len(self.classes))
