"""Finding the weighted layers of an unmodified Flax model, and capturing what K-FAC needs.

Both steps intercept `__call__` of every `nn.Dense` and `nn.Conv` instance (this includes
`actbench.models.layers.Conv`) with `flax.linen.intercept_methods`; the model is never edited:

- `trace_calls` runs the model abstractly (`jax.eval_shape`) and records each call of such a
  layer: its path, kind, shapes, weight count (from the layer's own parameters) and conv
  geometry. Parameters of any other module (BatchNorm, embeddings, ...) are listed as
  `Uncovered` with their module's class.
- `batch_sums` runs the model for real: each recorded layer's input goes into the A sum (for a
  convolution, the parts A is assembled from on the host: `moments.conv_input_parts`), and a
  zero array is added to its output, so the gradient of the loss with respect to that array is
  the gradient with respect to the layer's output (pre-activation), for every layer from one
  backward pass that computes no parameter gradients.

A layer called several times (shared weights) contributes every call's rows to its factors.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.linear import canonicalize_padding
from jax import lax

from actbench.fisher import moments

KINDS = ("dense", "conv", "depthwise_conv", "grouped_conv")


@dataclasses.dataclass(frozen=True)
class Layer:
  """A weighted layer the Fisher approximation covers.

  Attributes:
    path: the module path, '/'-joined (e.g. 'BasicBlock_3/Conv_1').
    kind: 'dense', 'conv', 'depthwise_conv' (feature_group_count == input channels) or
      'grouped_conv' (any other feature_group_count > 1).
    num_weights: kernel size + bias size.
    has_bias: whether the layer has a bias (A then has a constant 1 appended to its inputs).
    num_blocks: 1, or feature_group_count for depthwise and grouped convs (one K-FAC block per
      group; num_weights == num_blocks * a_dim * g_dim).
    a_dim, g_dim: the side of each block's A and G.
    input_width: the inputs a block sees, without the bias entry (d_in for a Dense).
  """

  path: str
  kind: str
  num_weights: int
  has_bias: bool
  num_blocks: int
  a_dim: int
  g_dim: int
  input_width: int


@dataclasses.dataclass(frozen=True)
class Uncovered:
  """Weights outside the approximation: their module path, count and why."""

  path: str
  num_weights: int
  reason: str


@dataclasses.dataclass(frozen=True)
class Call:
  """One call of a covered layer, with everything static the traced computation needs."""

  key: str  # 'path#index'
  layer: Layer
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  out_dtype: Any
  rows: int  # output locations x examples in this call
  geometry: moments.ConvGeometry | None = None  # None for Dense
  num_shifted: int = 0


def _as_tuple(value, rank: int) -> tuple[int, ...]:
  if value is None:
    return (1,) * rank
  if isinstance(value, int):
    return (value,) * rank
  return tuple(int(v) for v in value)


def _size(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _describe(module, path: str, x, y, own_params) -> Call | str:
  """The Call of one intercepted layer call, or a string saying why it is not covered."""
  kernel, bias = own_params.get("kernel"), own_params.get("bias")
  if kernel is None or set(own_params) - {"kernel", "bias"}:
    return f"{type(module).__name__} with parameters {sorted(own_params)} (expected kernel, bias)"
  has_bias = bias is not None
  num_weights = _size(own_params)
  if isinstance(module, nn.Dense):
    d_in, features = kernel.shape
    layer = Layer(path, "dense", num_weights, has_bias, 1, d_in + has_bias, features, d_in)
    rows = math.prod(x.shape[:-1])
    geometry, num_shifted = None, 0
  else:
    kernel_size = tuple(kernel.shape[:-2])
    rank = len(kernel_size)
    if any(d != 1 for d in _as_tuple(module.input_dilation, rank)):
      return "convolution with input dilation (transposed convolution) is not covered"
    if module.conv_general_dilated is not None or module.conv_general_dilated_cls is not None:
      return "convolution with a custom conv_general_dilated is not covered"
    strides = _as_tuple(module.strides, rank)
    dilation = _as_tuple(module.kernel_dilation, rank)
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation)]
    in_spatial = tuple(x.shape[x.ndim - rank - 1:-1])
    padding = canonicalize_padding(module.padding, rank)
    pre_pad = None
    if padding in ("CIRCULAR", "REFLECT"):
      pre_pad = ({"CIRCULAR": "wrap", "REFLECT": "reflect"}[padding],
                 tuple(((k - 1) // 2, k // 2) for k in dilated))
      pads = ((0, 0),) * rank
    elif padding == "CAUSAL":
      pads = tuple((k - 1, 0) for k in dilated)
    elif isinstance(padding, str):
      pads = tuple(tuple(p) for p in lax.padtype_to_pads(in_spatial, dilated, strides, padding))
    else:
      pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    groups = int(module.feature_group_count)
    channels = x.shape[-1]
    features = kernel.shape[-1]
    geometry = moments.ConvGeometry(kernel_size, strides, dilation, pads, pre_pad, groups,
                                    in_spatial)
    if groups == 1:
      kind = "conv"
    elif groups == channels:
      kind = "depthwise_conv"
    else:
      kind = "grouped_conv"
    width = math.prod(kernel_size) * (channels // groups)
    layer = Layer(path, kind, num_weights, has_bias, groups, width + has_bias,
                  features // groups, width)
    rows = math.prod(y.shape[:-1])
    examples = rows // math.prod(geometry.out_spatial)
    num_shifted = moments.choose_num_shifted(geometry, channels, examples)
  if layer.num_blocks * layer.a_dim * layer.g_dim != num_weights:
    return f"{type(module).__name__} whose {num_weights} weights do not form its K-FAC blocks"
  return Call("", layer, tuple(x.shape), tuple(y.shape), y.dtype, rows, geometry, num_shifted)


def _covered(context) -> bool:
  return context.method_name == "__call__" and isinstance(context.module, (nn.Dense, nn.Conv))


def _inputs(args, kwargs):
  return args[0] if args else kwargs["inputs"]


def trace_calls(model: nn.Module, variables, images, apply_kwargs: dict):
  """Abstractly runs `model.apply(variables, images, **apply_kwargs)`.

  Returns (calls, uncovered, logits shape-dtype). Calls are in execution order, keys
  'path#index' numbering the calls of a shared layer.
  """
  calls: list[Call] = []
  refused: dict[str, str] = {}
  classes: dict[str, str] = {}
  counter: collections.Counter = collections.Counter()

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    classes.setdefault("/".join(module.path), type(module).__name__)
    if not _covered(context):
      return next_fun(*args, **kwargs)
    x = _inputs(args, kwargs)
    y = next_fun(*args, **kwargs)
    path = "/".join(module.path)
    own = module.variables.get("params", {})
    described = _describe(module, path, x, y, dict(own))
    if isinstance(described, str):
      refused[path] = described
    else:
      index = counter[path]
      counter[path] += 1
      calls.append(dataclasses.replace(described, key=f"{path}#{index}"))
    return y

  def run(variables, images):
    with nn.intercept_methods(interceptor):
      return model.apply(variables, images, **apply_kwargs)

  logits = jax.eval_shape(run, variables, images)
  covered = {call.layer.path for call in calls}
  by_module: dict[str, int] = collections.defaultdict(int)
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables.get("params", {}))[0]:
    names = [getattr(p, "key", str(p)) for p in path]
    module_path = "/".join(str(n) for n in names[:-1])
    if module_path not in covered:
      by_module[module_path] += math.prod(leaf.shape)
  uncovered = []
  for path, count in by_module.items():
    if path in refused:
      reason = refused[path]
    elif path in classes:
      reason = f"{classes[path]} weights are not Dense or Conv kernels"
    else:
      reason = "parameters of a module that was not called"
    uncovered.append(Uncovered(path, count, reason))
  return calls, uncovered, logits


def layers_of(calls: list[Call]) -> list[Layer]:
  """The distinct layers of `calls`, in order of first call."""
  return list({call.layer.path: call.layer for call in calls}.values())


def _input_parts(call: Call, x) -> dict:
  """What the call adds to its A sum: a Dense layer's moment, a conv's `conv_input_parts`."""
  if call.geometry is None:
    return {"moment": moments.dense_input_moment(x, call.layer.has_bias)}
  rank = call.geometry.rank
  x = x.reshape((-1,) + tuple(x.shape[x.ndim - rank - 1:]))
  return moments.conv_input_parts(x, call.geometry, call.layer.has_bias, call.num_shifted)


def _zero_parts(call: Call) -> dict:
  if call.geometry is None:
    dim = call.layer.a_dim
    return {"moment": jnp.zeros((1, dim, dim), jnp.float32)}
  return moments.conv_parts_zeros(call.geometry, call.in_shape[-1], call.layer.has_bias,
                                  call.num_shifted)


def assemble_input_moment(call: Call, parts: dict, num_chunks: int, xp=np,
                          dtype=np.float64):
  """The call's A sum over `num_chunks` chunks from its summed parts: host float64 by default;
  with xp=jax.numpy, traced (on the device) in `dtype`."""
  if call.geometry is None:
    return xp.asarray(parts["moment"], dtype)
  return moments.assemble_conv_moment(parts, call.geometry, call.in_shape[-1],
                                      call.layer.has_bias, call.num_shifted,
                                      call.rows * num_chunks, xp, dtype)


def batch_sums(model: nn.Module, variables, calls: list[Call], images, labels, noise,
               fisher_type: str, apply_kwargs: dict):
  """A parts and G sums over one batch (not yet divided), per call key, and whether logits are
  finite. A call's A sum is `assemble_input_moment` of its parts.

  The loss is the SUM over examples of the cross-entropy, so the gradient with respect to one
  example's outputs is that example's own gradient. fisher_type 'empirical' uses `labels`;
  'sampled' uses argmax(logits + noise), noise being Gumbel(0, 1) of shape (batch, classes): a
  sample of the model's predictive distribution, not differentiated.
  """
  by_key = {call.key: call for call in calls}
  zeros = {call.key: jnp.zeros(call.out_shape, call.out_dtype) for call in calls}

  def loss_fn(perturbations):
    a_sums: dict = {}
    counter: collections.Counter = collections.Counter()

    def interceptor(next_fun, args, kwargs, context):
      if not _covered(context):
        return next_fun(*args, **kwargs)
      path = "/".join(context.module.path)
      key = f"{path}#{counter[path]}"
      if key not in by_key:  # a layer that trace_calls did not cover
        return next_fun(*args, **kwargs)
      counter[path] += 1
      a_sums[key] = _input_parts(by_key[key], lax.stop_gradient(_inputs(args, kwargs)))
      return next_fun(*args, **kwargs) + perturbations[key]

    with nn.intercept_methods(interceptor):
      logits = model.apply(variables, images, **apply_kwargs)
    logits = logits.astype(jnp.float32)
    if fisher_type == "sampled":
      labels_used = jnp.argmax(lax.stop_gradient(logits) + noise, axis=-1)
    else:
      labels_used = labels
    log_probs = jax.nn.log_softmax(logits)
    loss = -jnp.take_along_axis(log_probs, labels_used[..., None], axis=-1).sum()
    return loss, (a_sums, jnp.all(jnp.isfinite(logits)))

  grads, (a_sums, finite) = jax.grad(loss_fn, has_aux=True)(zeros)
  g_sums = {key: moments.output_moment(grads[key], by_key[key].layer.num_blocks)
            for key in by_key}
  return a_sums, g_sums, finite


def chunked_sums(model, variables, calls, images, labels, noise, fisher_type, apply_kwargs):
  """A parts per call and G sums per layer over a batch given as chunks (num_chunks, chunk, ...).

  The chunks run one after another (lax.scan), so memory is that of one chunk; after a chunk
  with non-finite logits the rest are skipped (the sums are then partial: the member failed).
  Returns ({call key: A parts}, {path: G sum}, logits finite): the host assembles each call's
  A (`assemble_input_moment`) and adds those of a shared layer (`layer_input_moments`).
  """
  def add_chunk(carry, batch):
    a_sums, g_sums, finite = batch_sums(model, variables, calls, *batch, fisher_type,
                                        apply_kwargs)
    a_acc, g_acc, finite_acc = carry
    return (jax.tree.map(jnp.add, a_acc, a_sums), jax.tree.map(jnp.add, g_acc, g_sums),
            finite_acc & finite)

  def step(carry, batch):
    # Once the logits were not finite the member has failed, whatever the other chunks hold:
    # skip them (under lax.map only the branch taken runs; under vmap both do, as before).
    return lax.cond(carry[2], add_chunk, lambda carry, _: carry, carry, batch), None

  if images.shape[0] == 1:
    a_sums, g_sums, finite = batch_sums(model, variables, calls, images[0], labels[0], noise[0],
                                        fisher_type, apply_kwargs)
  else:
    init = ({c.key: _zero_parts(c) for c in calls},
            {c.key: jnp.zeros((c.layer.num_blocks, c.layer.g_dim, c.layer.g_dim), jnp.float32)
             for c in calls}, jnp.array(True))
    (a_sums, g_sums, finite), _ = lax.scan(step, init, (images, labels, noise))
  g_layer: dict = {}
  for call in calls:
    path = call.layer.path
    g_layer[path] = g_sums[call.key] + g_layer[path] if path in g_layer else g_sums[call.key]
  return a_sums, g_layer, finite


def layer_input_moments(calls, a_parts: dict, num_chunks: int, xp=np,
                        dtype=np.float64) -> dict:
  """{path: A sum} from `chunked_sums`' parts: each call assembled (`assemble_input_moment`),
  a shared layer's calls added."""
  a_layer: dict = {}
  for call in calls:
    path = call.layer.path
    a = assemble_input_moment(call, a_parts[call.key], num_chunks, xp, dtype)
    a_layer[path] = a_layer[path] + a if path in a_layer else a
  return a_layer
