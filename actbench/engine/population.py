"""Population form: many activations of one schema as integer arrays, and one evaluator.

A population trains in one compiled program, so its activations must be data, not code.
An `Encoding` fixes a schema and the operators each kind of placeholder ranges over; an
activation is then a row of integer codes, one per placeholder (pre-order), and

    encoding.apply(codes, x)

evaluates it with `lax.switch` at every placeholder. Under `lax.map` over the population the
switch index is a scalar and only the selected operator runs (the fast path on CPU); under
`vmap` every operator runs and the selected result is kept (accelerators). In that case each
unselected operator is fed its harmless `safe_input` instead of x, so an operator that would
overflow, say exp at x = 100 for a relu member, can put neither inf into the values nor NaN
into the gradients of the member that did not select it.

Build the encoding from the search space, not from the names, when populations change while
the compiled program should not: `Encoding.for_space(schema)`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from actbench.expr import compiler, operators
from actbench.expr.expression import Expr, ExpressionError, parse, parse_schema

MEMBER_AXIS = "population"  # the mesh axis population members are sharded over


STRATEGIES = ("auto", "map", "vmap", "grouped")
DEFAULT_GROUP_SIZE = 8


def resolve_strategy(strategy: str) -> str:
  """How a population's members run:
    'map'      lax.map: one member at a time, only its own operators run (the fastest on CPU);
    'vmap'     one wide program: every operator of the search space runs for every member and
               the selected one is kept;
    'grouped'  the members sorted by their codes and cut into groups (`group_size`), lax.map
               over the groups and vmap within one, where only the operators some member of
               the group selects run (`present_operators`): vmap's width, work that scales
               with what the group selects;
    'auto'     map on CPU, vmap elsewhere.
  """
  if strategy not in STRATEGIES:
    raise ValueError(f"population strategy must be one of {STRATEGIES}, got {strategy!r}")
  if strategy == "auto":
    return "map" if jax.default_backend() == "cpu" else "vmap"
  return strategy


def program_options(config) -> dict:
  """How config.population runs the members of every population program (training, K-FAC and
  Lanczos Fisher features): the keyword arguments `strategy`, `group_size`, `normalize`."""
  cfg = config.population
  return {"strategy": cfg.strategy, "group_size": int(cfg.group_size),
          "normalize": bool(cfg.normalize)}


def group_shape(members: int, group_size: int) -> tuple[int, int]:
  """(groups, members per group) the 'grouped' strategy cuts `members` into: the fewest
  groups of at most `group_size` (0: one group), as even as they go; the last is padded."""
  if group_size <= 0 or members <= group_size:
    return 1, members
  groups = -(-members // group_size)
  return groups, -(-members // groups)


def group_order(codes, group_size: int) -> tuple[jax.Array, int, int]:
  """(index, groups, size): the members (rows of `codes`) in the order 'grouped' runs them,
  `index` (groups * size,) reshaped to (groups, size) giving each group's members. Sorted by
  their codes (the first slot first), neighbours share operators, so a group selects few of
  them; the last group is padded with copies of the last member, which select nothing new."""
  codes = jnp.asarray(codes)
  members = codes.shape[0]
  groups, size = group_shape(members, group_size)
  order = jnp.lexsort(tuple(codes[:, slot] for slot in reversed(range(codes.shape[1]))))
  index = jnp.concatenate([order, jnp.full(groups * size - members, order[-1])])
  return index, groups, size


def over_members(fn, member_args: tuple, shared_args: tuple, strategy: str, *, encoding=None,
                 codes_at: int = 0, group_size: int = DEFAULT_GROUP_SIZE):
  """fn(*member, *shared_args) for every member: the leading axis of each of `member_args`
  (pytrees), by a resolved strategy (`resolve_strategy`). Under 'grouped', fn also gets
  `present=` (the group's `encoding.present_operators`) and must pass it to `apply`; the
  member codes are member_args[codes_at]. Results come back in the members' order."""
  if strategy == "map":
    return jax.lax.map(lambda member: fn(*member, *shared_args), member_args)
  if strategy == "vmap":
    return jax.vmap(lambda *member: fn(*member, *shared_args))(*member_args)
  if strategy != "grouped":
    raise ValueError(f"unresolved population strategy {strategy!r}")
  codes = member_args[codes_at]
  members = codes.shape[0]

  def one_group(group_args):
    present = encoding.present_operators(group_args[codes_at])
    return jax.vmap(lambda *member: fn(*member, *shared_args, present=present))(*group_args)

  if group_shape(members, group_size)[0] == 1:
    return one_group(member_args)  # as they are: no sort
  index, groups, size = group_order(codes, group_size)
  grouped = jax.tree.map(lambda a: a[index].reshape((groups, size) + a.shape[1:]), member_args)
  results = jax.lax.map(one_group, grouped)
  # The padding's results are dropped; the members' come back in their order.
  inverse = jnp.argsort(index[:members])
  return jax.tree.map(lambda a: a.reshape((groups * size,) + a.shape[2:])[:members][inverse],
                      results)


def _with_forward_derivative(elementwise, dual=None):
  """The elementwise function with a custom JVP that computes f and f' in one pass.

  Its derivative is diagonal, f'(x) = jvp(f, x, 1), so the switches over operators run once,
  in the forward pass, each branch returning value and derivative; reverse mode then only
  multiplies by the stored f'(x). That halves the branches XLA compiles (no transposed
  switches) and, under vmap, the operators evaluated in the backward pass. Forward mode and
  higher derivatives still work: the rule is itself differentiable.

  dual: x -> (f(x), f'(x)) stacked as one array (2, *x.shape), e.g. `Encoding._evaluate_dual`;
  None: jax.jvp of `elementwise`.
  """
  @jax.custom_jvp
  def fn(x):
    return elementwise(x)

  @fn.defjvp
  def fn_jvp(primals, tangents):
    (x,), (tangent,) = primals, tangents
    if dual is None:
      value, derivative = jax.jvp(elementwise, (x,), (jnp.ones_like(x),))
    else:
      pair = dual(x)
      value, derivative = pair[0], pair[1]
    return value, derivative * tangent

  return fn


def _dual_call(fn, args, pairs: tuple[bool, ...]):
  """fn's value and its jvp stacked, (2, ...): each arg is either x itself (tangent 1) or a
  (value, derivative) pair stacked the same way (pairs says which).

  One array rather than a (value, derivative) tuple, so that XLA:CPU compiles each switch branch
  into one kernel instead of two: those kernels were most of the compilation of a population
  program over a whole search space (8 activation sites over the benchmark space: 1147 kernels
  before, 514 after, compilation 40% shorter; the kernels run about as fast).
  """
  primals = [a[0] if pair else a for a, pair in zip(args, pairs)]
  value, pullback = jax.vjp(fn, *primals)
  partials = pullback(jnp.ones_like(value))  # fn is elementwise: its partial derivatives
  # The chain rule argument by argument; an argument that does not move (derivative 0: a
  # constant or a flat relu) contributes 0 even where fn's partial is inf or NaN (pow at a
  # negative base), as reverse mode on the compiled function gives. jvp would give 0 * inf.
  tangent = sum(jnp.where(a[1] == 0, 0, partial * a[1]) if pair else partial
                for a, pair, partial in zip(args, pairs, partials))
  return jnp.stack([value, tangent])


def schema_of(expr) -> Expr:
  """The schema an expression belongs to: every operator replaced by its arity's placeholder."""
  expr = parse(expr)
  if expr.is_leaf:
    return expr
  return Expr(operators.get(expr.op).arity, tuple(schema_of(a) for a in expr.args))


@dataclasses.dataclass(frozen=True)
class Encoding:
  """A schema and the operator table of each kind of placeholder. Hashable: usable as a
  static argument of jit."""

  schema: Expr
  unary: tuple[str, ...] = ()
  binary: tuple[str, ...] = ()
  nary: tuple[str, ...] = ()

  @classmethod
  def for_space(cls, schema, unary: Sequence[str] | None = None,
                binary: Sequence[str] | None = None,
                nary: Sequence[str] | None = None) -> Encoding:
    """The encoding of a whole search space (defaults as in space.enumerate)."""
    schema = parse_schema(schema)
    return cls(
        schema,
        operators.resolve(unary, operators.UNARY, operators.BENCHMARK_UNARY),
        operators.resolve(binary, operators.BINARY, operators.BENCHMARK_BINARY),
        operators.resolve(nary, operators.NARY, operators.DEFAULT_NARY))

  def table(self, arity: str) -> tuple[str, ...]:
    return {operators.UNARY: self.unary, operators.BINARY: self.binary,
            operators.NARY: self.nary}[arity]

  @property
  def slots(self) -> tuple[str, ...]:
    """The kind of each placeholder, in code order (pre-order)."""
    return tuple(node.op for node in self.schema.placeholders())

  @property
  def num_slots(self) -> int:
    return len(self.slots)

  def encode(self, names: Iterable) -> np.ndarray:
    """Codes of the named activations: int32 array (n, num_slots).

    Raises:
      ExpressionError: a name is malformed, does not fit the schema, or uses an operator
        outside the encoding's tables.
    """
    if isinstance(names, (str, Expr)):
      raise TypeError("expected a list of function names, got a single name; wrap it in a list")
    lookup = {arity: {name: i for i, name in enumerate(self.table(arity))}
              for arity in operators.ARITIES}
    rows = []
    for name in names:
      expr = parse(name)
      row = []
      self._encode_node(expr, self.schema, lookup, row, name)
      rows.append(row)
    return np.asarray(rows, np.int32).reshape(len(rows), self.num_slots)

  def _encode_node(self, node: Expr, pattern: Expr, lookup, row: list, name):
    def misfit(why):
      return ExpressionError(f"does not fit the schema {str(self.schema)!r}: {why}", str(name))
    if pattern.op in operators.ARITIES:
      if node.is_leaf or operators.get(node.op).arity != pattern.op:
        raise misfit(f"{str(node)!r} stands where a {pattern.op} operator is expected")
      code = lookup[pattern.op].get(node.op)
      if code is None:
        raise misfit(f"operator {node.op!r} is not among the encoding's {pattern.op} "
                     f"operators {list(self.table(pattern.op))}")
      row.append(code)
    elif node.op != pattern.op:
      raise misfit(f"{str(node)!r} stands where {str(pattern)!r} is expected")
    if len(node.args) != len(pattern.args):
      raise misfit(f"{str(node)!r} has {len(node.args)} arguments, the schema "
                   f"{len(pattern.args)} there")
    for arg, pattern_arg in zip(node.args, pattern.args):
      self._encode_node(arg, pattern_arg, lookup, row, name)

  def decode(self, codes) -> list[str]:
    """Canonical names of code rows (one row or a 2-D array)."""
    codes = np.asarray(codes)
    single = codes.ndim == 1
    codes = np.atleast_2d(codes)
    if codes.shape[-1] != self.num_slots:
      raise ValueError(f"codes have {codes.shape[-1]} slots, the schema {self.num_slots}")
    names = []
    for row in codes:
      it = iter(row.tolist())
      names.append(str(self._decode_node(self.schema, it)))
    return names[0] if single else names

  def _decode_node(self, pattern: Expr, codes) -> Expr:
    if pattern.is_leaf:
      return pattern
    if pattern.op in operators.ARITIES:
      table = self.table(pattern.op)
      code = next(codes)
      if not 0 <= code < len(table):
        raise ValueError(f"code {code} is out of range for {len(table)} {pattern.op} operators")
      op = table[code]
    else:
      op = pattern.op
    return Expr(op, tuple(self._decode_node(arg, codes) for arg in pattern.args))

  @property
  def width(self) -> int:
    """The longest operator table: the second axis of `present_operators`."""
    return max(len(self.unary), len(self.binary), len(self.nary), 1)

  def present_operators(self, codes) -> jax.Array:
    """bool (num_slots, width): whether any row of `codes` (n, num_slots) selects operator k
    at slot s. Pass it to `apply` under vmap so that only those operators run."""
    return _present(codes, self.num_slots, self.width)

  def _evaluate(self, codes: jax.Array, x: jax.Array, present=None) -> jax.Array:
    slot = itertools.count()

    def visit(pattern: Expr) -> jax.Array:
      if pattern.is_leaf:
        return x
      if pattern.op not in operators.ARITIES:
        args = [visit(arg) for arg in pattern.args]
        return operators.get(pattern.op).jax_fn(*args).astype(x.dtype)
      index = next(slot)  # pre-order: the node's slot before its arguments'
      args = [visit(arg) for arg in pattern.args]
      branches = [_masked_branch(operators.get(name), k, x.dtype)
                  for k, name in enumerate(self.table(pattern.op))]
      return _select(codes[index], branches, args, present, index, jnp.zeros_like(x))

    return visit(self.schema)

  def _evaluate_dual(self, codes: jax.Array, x: jax.Array, present=None) -> jax.Array:
    """(f(x), f'(x)) stacked, (2, *x.shape): `_evaluate` and its derivative, every switch
    branch computing both (`_dual_call`); the same operations as jax.jvp of `_evaluate`."""
    slot = itertools.count()

    def visit(pattern: Expr) -> tuple[jax.Array, bool]:  # (array, whether a stacked pair)
      if pattern.is_leaf:
        return x, False
      if pattern.op not in operators.ARITIES:
        args, pairs = zip(*[visit(arg) for arg in pattern.args])
        operator = operators.get(pattern.op)
        return _dual_call(lambda *a: operator.jax_fn(*a).astype(x.dtype), args, pairs), True
      index = next(slot)  # pre-order: the node's slot before its arguments'
      args, pairs = zip(*[visit(arg) for arg in pattern.args])
      branches = [_dual_branch(operators.get(name), k, x.dtype, pairs)
                  for k, name in enumerate(self.table(pattern.op))]
      template = jnp.zeros((2,) + x.shape, x.dtype)
      return _select(codes[index], branches, args, present, index, template), True

    result, pair = visit(self.schema)
    return result if pair else jnp.stack([result, jnp.ones_like(result)])

  def apply(self, codes, x, normalize: bool = False, present=None) -> jax.Array:
    """The activation with these codes (int array (num_slots,)) at x, any shape and float dtype.

    Jittable, differentiable in x, usable under lax.map and vmap over (codes, x). With
    `normalize`, returns (f - E[f]) / sqrt(Var[f]) under N(0, 1), the moments computed in the
    graph by Gauss-Hermite quadrature in float32; a member whose moments are not finite gets
    NaN or inf values (it fails in training) rather than an error.

    `present`: None (every operator of a slot is a branch of one switch: under vmap all of them
    run), or `present_operators` of the vmapped population, not vmapped itself: then each
    operator runs behind a conditional on whether any member selects it, so the work under
    vmap scales with the operators the population uses. The values are the same either way.
    """
    x = compiler.as_float_array(x)
    codes = jnp.asarray(codes)
    if codes.shape != (self.num_slots,):
      raise ValueError(f"codes must have shape ({self.num_slots},) for "
                       f"{type(self).__name__}, got {codes.shape}; map over a population")
    values = _with_forward_derivative(lambda z: self._evaluate(codes, z, present),
                                      lambda z: self._evaluate_dual(codes, z, present))(
                                          x.astype(compiler.compute_dtype(x.dtype)))
    if normalize:
      mean, std = compiler.jax_moments(lambda z: self._evaluate(codes, z, present))
      values = (values - mean) / std
    return values.astype(x.dtype)

  def activation(self, codes, normalize: bool = False, present=None):
    """`apply` with the codes bound: a function of x alone, the form models take."""
    return lambda x: self.apply(codes, x, normalize, present)


@dataclasses.dataclass(frozen=True)
class FunctionTable:
  """Activations of any schemas as one table: a code picks a whole function.

  The population form for activations that share no schema (baselines such as relu(x) beside
  candidates of a search space). Each code row has one slot, the function's index. Under
  lax.map only the selected function runs. Under vmap every function runs, each fed a
  `safe_input` of its own (a point where it and its neighbourhood are finite) unless selected,
  so unselected functions poison neither values nor gradients.
  """

  functions: tuple[Expr, ...]

  @classmethod
  def of(cls, names: Iterable) -> FunctionTable:
    """The table of the distinct functions among `names`, in first-seen order."""
    return cls(tuple(dict.fromkeys(parse(name) for name in names)))

  @property
  def num_slots(self) -> int:
    return 1

  def encode(self, names: Iterable) -> np.ndarray:
    if isinstance(names, (str, Expr)):
      raise TypeError("expected a list of function names, got a single name; wrap it in a list")
    index = {expr: i for i, expr in enumerate(self.functions)}
    codes = []
    for name in names:
      expr = parse(name)
      if expr not in index:
        raise ExpressionError("is not in the function table", str(name))
      codes.append([index[expr]])
    return np.asarray(codes, np.int32).reshape(len(codes), 1)

  def decode(self, codes) -> list[str]:
    codes = np.atleast_2d(np.asarray(codes))
    return [str(self.functions[int(row[0])]) for row in codes]

  @property
  def width(self) -> int:
    return max(len(self.functions), 1)

  def present_operators(self, codes) -> jax.Array:
    """bool (1, len(functions)): whether any row of `codes` selects each function."""
    return _present(codes, 1, self.width)

  def _evaluate(self, codes: jax.Array, x: jax.Array, present=None) -> jax.Array:
    branches = [_table_branch(expr, k) for k, expr in enumerate(self.functions)]
    return _select(codes[0], branches, [x], present, 0, jnp.zeros_like(x))

  def _evaluate_dual(self, codes: jax.Array, x: jax.Array, present=None) -> jax.Array:
    """(f(x), f'(x)) stacked, (2, *x.shape); see Encoding._evaluate_dual."""
    branches = [_table_dual_branch(expr, k) for k, expr in enumerate(self.functions)]
    return _select(codes[0], branches, [x], present, 0, jnp.zeros((2,) + x.shape, x.dtype))

  apply = Encoding.apply
  activation = Encoding.activation


def _present(codes, num_slots: int, width: int) -> jax.Array:
  codes = jnp.asarray(codes).reshape(-1, num_slots)
  return jnp.any(codes[:, :, None] == jnp.arange(width), axis=0)


def _select(code, branches, args, present, slot: int, template) -> jax.Array:
  """branches[code](code, *args). Without `present`, one lax.switch: under vmap (a batched
  code) every branch runs and the selected results are kept. With it, each branch runs behind
  a lax.cond on present[slot, k], which stays a conditional under vmap because `present` is
  the same for every member, so a branch no member selects costs nothing."""
  if present is None:
    return jax.lax.switch(code, branches, code, *args)
  result = template
  for k, branch in enumerate(branches):
    result = jax.lax.cond(
        present[slot, k],
        lambda acc, k=k, branch=branch: jnp.where(code == k, branch(code, *args), acc),
        lambda acc: acc, result)
  return result


_SAFE_CANDIDATES = (0.5, 1.0, -0.5, 2.0, -1.0, 0.25, -2.0, 3.0)


def _safe_input(expr: Expr) -> float:
  """A point where `expr` is finite with finite difference quotients (so its derivative is
  finite there too); 1.0 if none of the candidates qualifies."""
  from actbench.expr import host  # host imports nothing from here; kept local to stay light
  step = 1e-4
  points = np.array([[c - step, c, c + step] for c in _SAFE_CANDIDATES]).reshape(-1)
  values = host.evaluate([expr], points)[0].reshape(len(_SAFE_CANDIDATES), 3)
  for candidate, row in zip(_SAFE_CANDIDATES, values):
    if np.all(np.isfinite(row)) and np.all(np.abs(np.diff(row)) / step < 1e6):
      return candidate
  return 1.0


# Branch functions are cached so that the same function object comes back for every activation
# site: lax.switch then reuses the jaxpr it traced for an earlier site of the same shape (as do
# the jvp and partial evaluation of the switch), instead of tracing every operator again. In a
# ResNet-56 (55 sites, three shapes) over the benchmark space's 34 operators that takes the
# tracing of the Fisher population program from 20 s to 5 s.
_BRANCH_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=_BRANCH_CACHE_SIZE)
def _table_branch(expr: Expr, code: int):
  safe = _safe_input(expr)

  def branch(selected_code, x):
    x = jnp.where(selected_code == code, x, jnp.asarray(safe, x.dtype))
    return compiler.evaluate(expr, x).astype(x.dtype)
  return branch


@functools.lru_cache(maxsize=_BRANCH_CACHE_SIZE)
def _table_dual_branch(expr: Expr, code: int):
  safe = _safe_input(expr)

  def branch(selected_code, x):
    def masked(z):
      z = jnp.where(selected_code == code, z, jnp.asarray(safe, z.dtype))
      return compiler.evaluate(expr, z).astype(z.dtype)
    return _dual_call(masked, [x], (False,))
  return branch


@functools.lru_cache(maxsize=_BRANCH_CACHE_SIZE)
def _dual_branch(operator: operators.Operator, code: int, dtype, pairs: tuple[bool, ...]):
  def branch(selected_code, *args):
    selected = selected_code == code

    def masked(*primals):
      primals = [jnp.where(selected, p, jnp.asarray(operator.safe_input, dtype))
                 for p in primals]
      return operator.jax_fn(*primals).astype(dtype)
    return _dual_call(masked, args, pairs)
  return branch


@functools.lru_cache(maxsize=_BRANCH_CACHE_SIZE)
def _masked_branch(operator: operators.Operator, code: int, dtype):
  def branch(selected_code, *args):
    selected = selected_code == code
    args = [jnp.where(selected, arg, jnp.asarray(operator.safe_input, dtype)) for arg in args]
    return operator.jax_fn(*args).astype(dtype)
  return branch


def encode(names: Sequence, schema=None, unary: Sequence[str] | None = None,
           binary: Sequence[str] | None = None,
           nary: Sequence[str] | None = None) -> tuple[Encoding, np.ndarray]:
  """Encodes activations of one schema: returns (encoding, int32 codes (n, num_slots)).

  The schema is inferred from the names unless given; each placeholder kind's table is the
  given operators, or else those the names use, in registration order.
  """
  if isinstance(names, (str, Expr)):
    raise TypeError("expected a list of function names, got a single name; wrap it in a list")
  exprs = [parse(name) for name in names]
  if schema is None:
    if not exprs:
      raise ValueError("cannot infer a schema from no names; pass schema=")
    schema = schema_of(exprs[0])
    for name, expr in zip(names, exprs):
      if schema_of(expr) != schema:
        raise ExpressionError(
            f"does not share the schema {str(schema)!r} of {str(exprs[0])!r} "
            f"(its schema is {str(schema_of(expr))!r})", str(name))
  schema = parse_schema(schema)
  used = {arity: set() for arity in operators.ARITIES}
  for expr in exprs:
    for node in expr.nodes():
      if not node.is_leaf:
        used[operators.get(node.op).arity].add(node.op)
  tables = {}
  for arity, given in ((operators.UNARY, unary), (operators.BINARY, binary),
                       (operators.NARY, nary)):
    inferred = [name for name in operators.names(arity) if name in used[arity]]
    tables[arity] = operators.resolve(given, arity, ()) if given is not None else tuple(inferred)
  encoding = Encoding(schema, tables[operators.UNARY], tables[operators.BINARY],
                      tables[operators.NARY])
  return encoding, encoding.encode(exprs)


def form(names: Sequence, schema: str = "") -> Encoding | FunctionTable:
  """The population form one population of `names` trains in: over `schema` when given (the
  whole search space), else over the schema the names share, else a FunctionTable."""
  if schema:
    return Encoding.for_space(schema)
  if len({str(schema_of(name)) for name in names}) == 1:
    return encode(names)[0]
  return FunctionTable.of(names)


# A re-registered operator changes what a name means (and its safe input).
operators._ON_CHANGE.append(_table_branch.cache_clear)  # pylint: disable=protected-access
operators._ON_CHANGE.append(_masked_branch.cache_clear)  # pylint: disable=protected-access
operators._ON_CHANGE.append(_table_dual_branch.cache_clear)  # pylint: disable=protected-access
operators._ON_CHANGE.append(_dual_branch.cache_clear)  # pylint: disable=protected-access


def sharded_member_program(member, strategy: str, num_shared: int, *, encoding=None,
                           group_size: int = DEFAULT_GROUP_SIZE):
  """`program(per_member, *shared)`: `member(one_member, *shared)` for every member on the
  leading axis of `per_member` (an array or a pytree of arrays: the members' codes, or every
  argument of a member) by a resolved strategy (`over_members`; 'grouped' also passes
  `present=`, and then `per_member` must be the codes), in one jitted program whose member
  axis is sharded over every device and whose shared arguments are replicated. Used by the
  Fisher features (K-FAC and Lanczos, and the factor eigenvalues); the members must divide
  over the devices."""
  def members(per_member, *shared):
    return over_members(member, (per_member,), shared, strategy, encoding=encoding,
                        group_size=group_size)

  mesh = jax.make_mesh((jax.device_count(),), (MEMBER_AXIS,))
  sharded = jax.jit(jax.shard_map(members, mesh=mesh,
                                  in_specs=(jax.P(MEMBER_AXIS),) + (jax.P(),) * num_shared,
                                  out_specs=jax.P(MEMBER_AXIS), check_vma=False))
  member_sharding = jax.NamedSharding(mesh, jax.P(MEMBER_AXIS))
  replicated = jax.NamedSharding(mesh, jax.P())

  def program(per_member, *shared):
    return sharded(jax.device_put(per_member, member_sharding),
                   *jax.device_put(shared, replicated))

  return program

