"""actbench: activation-function optimization through surrogate modeling, in JAX.

The names a user needs:

    import actbench
    f = actbench.compile('max(relu(x),cosh(elu(x)))')        # a pure jax function
    names = list(actbench.space.enumerate('binary(unary(x),unary(x))'))
    classes = actbench.space.equivalence_classes(names)       # representative first
    X = actbench.features.outputs([c[0] for c in classes])    # (n, 1000) float32
    encoding, codes = actbench.population.encode(names[:8])   # activations as data

Training (`actbench.train.train_population`) and Fisher features (`actbench.fisher.features`)
import the model and data stack, so they are imported on their own: `from actbench import train`.
"""

from actbench import features, operators, population, space
from actbench.compiler import compile  # pylint: disable=redefined-builtin
from actbench.expression import Expr, ExpressionError, parse, parse_schema
from actbench.operators import register_operator

__version__ = "0.1.0"

__all__ = [
    "Expr", "ExpressionError", "compile", "features", "operators", "parse", "parse_schema",
    "population", "register_operator", "space",
]
