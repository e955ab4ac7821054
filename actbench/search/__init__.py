"""Stage 4 of the method: the surrogate-guided search and its replay on benchmark tables.

  candidates.py  the classes a search chooses among, with their features
  surrogate.py   the UMAP embedding and k-NN regression (METHOD.md section 4)
  strategies.py  aquasurf, random and regularized evolution behind one interface
  store_base.py  what every store does: classes, features, evaluations, claims
  store.py       the SQLite store of a workdir (the workers of one host), and `open_store`
  postgres_store.py  the PostgreSQL store that workers on many machines share
  journal.py     every evaluation appended beside the store, so a damaged store loses none
  recovery.py    a damaged store rebuilt from the journal and what the file still holds
  featurize.py   which classes get Fisher features under a budget, in rounds
  class_features.py  the classes' features in the store: outputs, Fisher, sketches, embedding
  workers.py     worker names, heartbeats, a pod's broadcast decisions
  loop.py        the search loop: propose, train, record, refit; its API is re-exported here
  replay.py      strategies replayed on a benchmark table, many seeds
  cost_replay.py  replays by training epochs, with and without successive halving

    from actbench import search
    summary = search.run(config, workdir)
"""

import importlib

_HOMES = {
    "actbench.search.loop": (
        "STORE_NAME", "SearchSummary", "check_recipe", "evaluations_from", "has_store",
        "history_of", "make_strategy", "open_store", "operator_choices", "provenance",
        "recipe_fingerprint", "recover", "run", "space_classes", "store_path", "trainable_names",
        "training_config"),
    "actbench.search.class_features": (
        "FISHER", "OUTPUTS", "SKETCH", "BudgetedFeatures", "baseline_names", "compute_features",
        "embedding", "embedding_kind", "stored_embedding"),
    "actbench.search.workers": ("SET_ASIDE", "default_worker", "is_dead_worker"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = [name for names in _HOMES.values() for name in names]


def __getattr__(name):
  # The loop (and JAX with it) is loaded on first use: importing the store alone stays light.
  if name in _HOME_OF:
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
