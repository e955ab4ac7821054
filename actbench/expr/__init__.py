"""Stage 1 of the method: activation functions as expressions, and search spaces of them.

  expression.py  the expression language: parse, Expr, ExpressionError, schemas
  operators.py   every operator, written once for jax.numpy and for float64 NumPy
  compiler.py    an expression as a jittable pure jax function (`actbench.compile`)
  host.py        float64 NumPy evaluation of many expressions at once, sharing subtrees
  space.py       search spaces enumerated from schemas, deduplicated by functional equivalence
  features.py    the output features of functions (values at fixed reference points)
"""
