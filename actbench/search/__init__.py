"""Stage 4 of the method: the surrogate-guided search and its replay on benchmark tables.

  candidates.py  the classes a search chooses among, with their features
  surrogate.py   the UMAP embedding and k-NN regression (METHOD.md section 4)
  strategies.py  aquasurf, random and regularized evolution behind one interface
  store.py       the SQLite store every worker shares (classes, features, evaluations, claims)
  journal.py     every evaluation appended beside the store, so a damaged store loses none
  recovery.py    a damaged store rebuilt from the journal and what the file still holds
  loop.py        the search loop: propose, train, record, refit; its API is re-exported here
  replay.py      strategies replayed on a benchmark table, many seeds

    from actbench import search
    summary = search.run(config, workdir)
"""

from actbench.search.loop import (FISHER, OUTPUTS, STORE_NAME, SearchSummary, baseline_names,
                                  check_recipe, compute_features, default_worker, embedding,
                                  embedding_kind, evaluations_from, history_of, is_dead_worker,
                                  make_strategy, operator_choices, recipe_fingerprint, recover,
                                  run, space_classes, store_path, trainable_names,
                                  training_config)

__all__ = [
    "FISHER", "OUTPUTS", "STORE_NAME", "SearchSummary", "baseline_names", "check_recipe",
    "compute_features", "default_worker", "embedding", "embedding_kind", "evaluations_from",
    "history_of", "is_dead_worker", "make_strategy", "operator_choices", "recipe_fingerprint",
    "recover", "run", "space_classes", "store_path", "trainable_names", "training_config",
]
