"""Stage 4 of the method: the surrogate-guided search and its replay on benchmark tables.

  candidates.py  the classes a search chooses among, with their features
  surrogate.py   the UMAP embedding and k-NN regression (METHOD.md section 4)
  strategies.py  aquasurf, random and regularized evolution behind one interface
  store_base.py  what every store does: classes, features, evaluations, claims
  store.py       the SQLite store of a workdir (the workers of one host), and `open_store`
  postgres_store.py  the PostgreSQL store that workers on many machines share
  journal.py     every evaluation appended beside the store, so a damaged store loses none
  recovery.py    a damaged store rebuilt from the journal and what the file still holds
  loop.py        the search loop: propose, train, record, refit; its API is re-exported here
  replay.py      strategies replayed on a benchmark table, many seeds

    from actbench import search
    summary = search.run(config, workdir)
"""

import importlib

__all__ = [
    "FISHER", "OUTPUTS", "SET_ASIDE", "STORE_NAME", "SearchSummary", "baseline_names",
    "check_recipe", "compute_features", "default_worker", "embedding", "embedding_kind",
    "evaluations_from", "has_store", "history_of", "is_dead_worker", "make_strategy",
    "open_store", "operator_choices", "recipe_fingerprint", "recover", "run", "space_classes",
    "store_path", "trainable_names", "training_config",
]


def __getattr__(name):
  # The loop (and JAX with it) is loaded on first use: importing the store alone stays light.
  if name in __all__:
    value = getattr(importlib.import_module("actbench.search.loop"), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
