"""Float64 evaluation of many expressions at once on the host, with NumPy.

Equivalence classes and output features need every function of a space at 1,000 points:
thousands to millions of small trees that share most of their subtrees. Compiling each would
take far longer than evaluating it, so here every distinct subtree is evaluated once, and
all nodes with the same operator at the same height go through that operator in one
vectorized call: `binary(unary(x),unary(x))` over 7 x 27 x 27 operators is 27 + 7 calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from actbench.expr import operators
from actbench.expr.expression import Expr


def _topological_nodes(exprs: Sequence[Expr]) -> tuple[list[Expr], dict[Expr, int]]:
  """Distinct nodes of all trees, every node after its arguments, and each node's index."""
  index: dict[Expr, int] = {}
  order: list[Expr] = []
  for root in exprs:
    if root in index:
      continue
    stack = [(root, False)]
    while stack:
      node, expanded = stack.pop()
      if node in index:
        continue
      if expanded or node.is_leaf:
        index[node] = len(order)
        order.append(node)
      else:
        stack.append((node, True))
        stack.extend((arg, False) for arg in reversed(node.args) if arg not in index)
  return order, index


def evaluate(exprs: Sequence[Expr], x: np.ndarray) -> np.ndarray:
  """Values of every expression at the points `x`: float64 array (len(exprs), len(x)).

  Operators follow IEEE arithmetic: overflow gives inf, invalid operations NaN, and neither
  warns or raises.
  """
  x = np.asarray(x, np.float64).reshape(-1)
  order, index = _topological_nodes(exprs)
  height: dict[Expr, int] = {}
  groups: dict[tuple[int, str, int], list[int]] = defaultdict(list)
  for position, node in enumerate(order):
    level = 1 + max((height[arg] for arg in node.args), default=-1)
    height[node] = level
    if not node.is_leaf:
      groups[(level, node.op, len(node.args))].append(position)
  values = np.empty((len(order), x.size), np.float64)
  for position, node in enumerate(order):
    if node.is_leaf:  # 'x', the only leaf
      values[position] = x
  with np.errstate(all="ignore"):
    for (_, op, arity), rows in sorted(groups.items(), key=lambda item: item[0][0]):
      args = [values[[index[order[row].args[k]] for row in rows]] for k in range(arity)]
      values[rows] = operators.get(op).host_fn(*args)
  return values[[index[e] for e in exprs]]
