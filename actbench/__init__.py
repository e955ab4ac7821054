"""actbench: activation-function optimization through surrogate modeling, in JAX.

The names a user needs:

    import actbench
    f = actbench.compile('max(relu(x),cosh(elu(x)))')        # a pure jax function
    names = list(actbench.space.enumerate('binary(unary(x),unary(x))'))
    classes = actbench.space.equivalence_classes(names)       # representative first
    X = actbench.features.outputs([c[0] for c in classes])    # (n, 1000) float32
    encoding, codes = actbench.population.encode(names[:8])   # activations as data

The package follows the method's pipeline, one folder per stage, each importing only the
stages above it in this list:

  expr/     activation functions as expressions; search spaces; output features
  models/   the networks, each taking its activation as a field
  engine/   population training: data, augmentation, objectives, optimizers, the trainer
  fisher/   Fisher information features at initialization (K-FAC; exact-Fisher Lanczos)
  tables/   Act-Bench benchmark tables: read, write, cache, download
  search/   the surrogate, the strategies, the store, the search loop and replay
  report/   leaderboards, figures and the benchmark report
  main.py, modes.py  the launcher

Below every stage: errors.py (what a user's mistake raises), defaults.py (every config field's
default, from configs/common.py) and processes.py.

Every module is also importable by its short name, loaded on first use (the training stack
is heavy): `from actbench import train, fisher, search, strategies, surrogate, tables`.
"""

import importlib

__version__ = "0.1.0"

# The names above, loaded on first use: `import actbench.search.store` (a store worker, a
# tool reading a store) then costs no JAX import.
_NAMES = {
    "Expr": ("actbench.expr.expression", "Expr"),
    "ExpressionError": ("actbench.expr.expression", "ExpressionError"),
    "compile": ("actbench.expr.compiler", "compile"),
    "parse": ("actbench.expr.expression", "parse"),
    "parse_schema": ("actbench.expr.expression", "parse_schema"),
    "register_operator": ("actbench.expr.operators", "register_operator"),
    "features": ("actbench.expr.features", None),
    "operators": ("actbench.expr.operators", None),
    "space": ("actbench.expr.space", None),
    "population": ("actbench.engine.population", None),
}

__all__ = [
    "Expr", "ExpressionError", "compile", "features", "operators", "parse", "parse_schema",
    "population", "register_operator", "space",
]

# Short name -> the module's place in its stage's folder.
_MODULES = {
    **{name: f"actbench.expr.{name}" for name in ("compiler", "expression", "host")},
    **{name: f"actbench.models.{name}" for name in ("layers", "mobilevit", "coatnet")},
    **{name: f"actbench.engine.{name}"
       for name in ("augment", "data", "objectives", "optim", "train", "trainer")},
    "lanczos": "actbench.fisher.lanczos",
    **{name: f"actbench.search.{name}"
       for name in ("candidates", "replay", "store", "strategies", "surrogate")},
    **{name: f"actbench.report.{name}" for name in ("document", "plots")},
}


def __getattr__(name):
  if name in _NAMES:
    module_name, attribute = _NAMES[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value
  if name in _MODULES:
    module = importlib.import_module(_MODULES[name])
    globals()[name] = module
    return module
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
