"""A convolution layer that can compute itself as patches + matmul (im2col).

Why this layer exists: actbench trains a population of networks that differ only in their
activation function inside one compiled program. On accelerators the population axis is
vmapped; on CPU it runs under `jax.lax.map` (a scan). XLA:CPU executes
`lax.conv_general_dilated` inside a scan body 20-50x slower than the same convolution outside
one, while strided slices, concatenations and one matmul run at full speed there. Measured with
bench/bench_conv.py on a 2-core CPU, a training step of a population of 4 takes 43 ms with XLA's
convolution and 11 ms with im2col for SmallCNN (batch 64), 142 s and 2.3 s for All-CNN-C
(batch 32). `Conv` below is a drop-in `flax.linen.Conv` whose `implementation` field picks
between the two computations:

  'xla'     `lax.conv_general_dilated`, exactly what `nn.Conv` does;
  'im2col'  extract the kh*kw*C_in patches with strided slices, then one matmul (an einsum per
            group for grouped and depthwise convolutions);
  'auto'    'im2col' when `jax.default_backend() == 'cpu'`, otherwise 'xla'.

Parameters are the same as `nn.Conv`'s in name, shape and initialization (`kernel` is
(*kernel_size, C_in // feature_group_count, features), `bias` is (features,)), so checkpoints,
parameter counts and per-layer code (the Fisher features intercept `nn.Conv.__call__`) don't
depend on the choice. The outputs agree to float rounding.

Input dilation (transposed convolution) has no im2col path: such a layer always uses 'xla'
(`Conv.effective_implementation` says which one a layer runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen.linear import canonicalize_padding
from jax import lax

IMPLEMENTATIONS = ("auto", "xla", "im2col")

Padding = str | Sequence[tuple[int, int]]

Activation = Callable[[jax.Array], jax.Array]

# Keras' he_normal (truncated normal, variance 2 / fan_in): the init of every weighted layer.
he_normal = nn.initializers.he_normal()


def global_average_pool(x: jax.Array) -> jax.Array:
  """(..., H, W, C) -> (..., C)."""
  return jnp.mean(x, axis=(-3, -2))


def resolve_implementation(implementation: str = "auto", backend: str | None = None) -> str:
  """Returns 'xla' or 'im2col': what `implementation` means on `backend`.

  Args:
    implementation: one of IMPLEMENTATIONS.
    backend: a JAX platform name ('cpu', 'gpu', 'tpu', ...); default `jax.default_backend()`.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"Unknown conv implementation {implementation!r}; valid: {', '.join(IMPLEMENTATIONS)}.")
  if implementation != "auto":
    return implementation
  backend = jax.default_backend() if backend is None else backend
  return "im2col" if backend == "cpu" else "xla"


def _as_tuple(value: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
  if value is None:
    return (1,) * rank
  if isinstance(value, int):
    return (value,) * rank
  return tuple(value)


def _patches(inputs: jax.Array, kernel_size: Sequence[int], strides: Sequence[int],
             padding: Padding, kernel_dilation: Sequence[int]) -> jax.Array:
  """Patches of `inputs` (N, *spatial, C): (N, *out_spatial, prod(kernel_size) * C).

  Pads the way `lax.conv_general_dilated` pads, then gathers one spatial dimension at a time,
  the last first: concatenating the k strided slices along a dimension multiplies the feature
  axis by k. That is sum(kernel_size) slices instead of prod(kernel_size) (6 instead of 9 for
  3x3), which compiles faster than one concatenation of all taps and runs as fast. The feature
  order comes out (*kernel_size, C), the order of a kernel reshaped to (-1, features).
  """
  dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation)]
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(inputs.shape[1:-1], dilated, strides, padding)
  else:
    pads = [tuple(p) for p in padding]
  # lax.pad accepts negative (cropping) pads, like lax.conv_general_dilated does.
  zero = jnp.zeros((), inputs.dtype)
  x = lax.pad(inputs, zero, [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)])
  out_spatial = [(size - dk) // s + 1 for size, dk, s in zip(x.shape[1:-1], dilated, strides)]
  if min(out_spatial) <= 0:
    raise ValueError(f"Kernel {tuple(kernel_size)} (dilation {tuple(kernel_dilation)}) does not "
                     f"fit padded input of spatial shape {x.shape[1:-1]}.")
  for axis in reversed(range(1, x.ndim - 1)):
    taps, dilation, stride = (kernel_size[axis - 1], kernel_dilation[axis - 1],
                              strides[axis - 1])
    pieces = []
    for tap in range(taps):
      start, limit, step = [0] * x.ndim, list(x.shape), [1] * x.ndim
      start[axis] = tap * dilation
      limit[axis] = start[axis] + (out_spatial[axis - 1] - 1) * stride + 1
      step[axis] = stride
      pieces.append(lax.slice(x, start, limit, step))
    x = jnp.concatenate(pieces, axis=-1) if taps > 1 else pieces[0]
  return x


def extract_patches(inputs: jax.Array, kernel_size: Sequence[int],
                    strides: int | Sequence[int] | None = 1, padding: Padding = "SAME",
                    kernel_dilation: int | Sequence[int] | None = 1) -> jax.Array:
  """Convolution patches of `inputs` (N, *spatial, C): (N, *out_spatial, prod(kernel_size) * C).

  The last axis is ordered (*kernel_size, C), the order of `kernel.reshape(-1, features)` for a
  `Conv` kernel, so for feature_group_count 1 a convolution is `extract_patches(...) @ that`.
  `padding` is 'SAME', 'VALID' or one (low, high) pair per spatial dimension.
  """
  rank = len(kernel_size)
  return _patches(inputs, tuple(kernel_size), _as_tuple(strides, rank),
                  canonicalize_padding(padding, rank), _as_tuple(kernel_dilation, rank))


def conv_im2col(inputs: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding,
                kernel_dilation: Sequence[int], feature_group_count: int = 1,
                precision=None) -> jax.Array:
  """`lax.conv_general_dilated` (NHWC-style inputs, HWIO-style kernel) as patches + matmul."""
  kernel_size = kernel.shape[:-2]
  in_per_group, features = kernel.shape[-2:]
  taps = math.prod(kernel_size)
  groups = feature_group_count
  patches = _patches(inputs, kernel_size, strides, padding, kernel_dilation)
  out_shape = patches.shape[:-1] + (features,)
  patches = patches.reshape(-1, patches.shape[-1])
  if groups == 1:
    y = jnp.dot(patches, kernel.reshape(taps * in_per_group, features), precision=precision)
  elif in_per_group == 1:
    # Depthwise: a multiply and a sum over the taps compiles faster and runs faster on XLA:CPU
    # than the batched matmul below, whose contraction is only `taps` long.
    patches = patches.reshape(-1, taps, groups, 1)
    kernel = kernel.reshape(taps, groups, features // groups)
    y = jnp.sum(patches * kernel, axis=1)
  else:
    # Input channel c is in group c // in_per_group, output channel o in o // (features // groups).
    patches = patches.reshape(-1, taps, groups, in_per_group)
    kernel = kernel.reshape(taps, in_per_group, groups, features // groups)
    y = jnp.einsum("ptgc,tcgo->pgo", patches, kernel, precision=precision)
  return y.reshape(out_shape)


class Conv(nn.Conv):
  """`flax.linen.Conv` with a choice of computation; see the module docstring for why.

  Attributes (beyond `nn.Conv`'s):
    implementation: 'auto' (im2col on CPU, XLA's convolution elsewhere), 'xla' or 'im2col'.

  Supports everything `nn.Conv` does except the deprecated `conv_general_dilated(_cls)` fields;
  with input_dilation != 1 it computes with 'xla' whatever `implementation` says.
  """

  implementation: str = "auto"

  @property
  def effective_implementation(self) -> str:
    """'xla' or 'im2col': the computation this layer runs on the default backend."""
    choice = resolve_implementation(self.implementation)
    rank = 1 if isinstance(self.kernel_size, int) else len(self.kernel_size)
    if choice == "im2col" and any(d != 1 for d in _as_tuple(self.input_dilation, rank)):
      return "xla"
    return choice

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the convolution to `inputs` (*batch, *spatial, C_in), like `nn.Conv`."""
    if self.conv_general_dilated is not None or self.conv_general_dilated_cls is not None:
      raise NotImplementedError("actbench.models.layers.Conv does not support the deprecated "
                                "conv_general_dilated / conv_general_dilated_cls fields.")
    kernel_size = ((self.kernel_size,) if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))
    rank = len(kernel_size)
    strides = _as_tuple(self.strides, rank)
    input_dilation = _as_tuple(self.input_dilation, rank)
    kernel_dilation = _as_tuple(self.kernel_dilation, rank)

    # Like nn.Conv: flatten several batch dimensions into one, or add one when there is none.
    batch_shape = inputs.shape[:inputs.ndim - rank - 1]
    if len(batch_shape) != 1:
      inputs = jnp.reshape(inputs, (-1,) + inputs.shape[len(batch_shape):])

    padding = canonicalize_padding(self.padding, rank)
    if padding in ("CIRCULAR", "REFLECT"):
      dilated = [(k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation)]
      pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in dilated] + [(0, 0)]
      inputs = jnp.pad(inputs, pads, mode={"CIRCULAR": "wrap", "REFLECT": "reflect"}[padding])
      padding = "VALID"
    elif padding == "CAUSAL":
      if rank != 1:
        raise ValueError("Causal padding is only implemented for 1D convolutions.")
      inputs = jnp.pad(inputs, [(0, 0), (kernel_dilation[0] * (kernel_size[0] - 1), 0), (0, 0)])
      padding = "VALID"

    in_features = inputs.shape[-1]
    if in_features % self.feature_group_count or self.features % self.feature_group_count:
      raise ValueError(f"feature_group_count {self.feature_group_count} must divide the input "
                       f"features {in_features} and the output features {self.features}.")
    kernel_shape = kernel_size + (in_features // self.feature_group_count, self.features)
    if self.mask is not None and self.mask.shape != kernel_shape:
      raise ValueError("Mask needs to have the same shape as weights. "
                       f"Shapes are: {self.mask.shape}, {kernel_shape}")
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    if self.mask is not None:
      kernel *= self.mask
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)

    if self.effective_implementation == "im2col":
      y = conv_im2col(inputs, kernel, strides, padding, kernel_dilation,
                      self.feature_group_count, self.precision)
    else:
      y = lax.conv_general_dilated(
          inputs, kernel, strides, padding, lhs_dilation=input_dilation,
          rhs_dilation=kernel_dilation,
          dimension_numbers=lax.ConvDimensionNumbers(
              (0, rank + 1) + tuple(range(1, rank + 1)),
              (rank + 1, rank) + tuple(range(rank)),
              (0, rank + 1) + tuple(range(1, rank + 1))),
          feature_group_count=self.feature_group_count, precision=self.precision)
    if bias is not None:
      y += bias
    if len(batch_shape) != 1:
      y = jnp.reshape(y, batch_shape + y.shape[1:])
    return y


def describe_implementations(model: nn.Module, *args, **kwargs) -> dict[str, str]:
  """Maps the path of each `Conv` in a model to the implementation it runs ('xla'/'im2col').

  Call as `describe_implementations(model, *example_args, **apply_kwargs)`; only shapes are
  traced (`jax.eval_shape`), nothing is computed. Layers that are plain `nn.Conv` show as 'xla'.
  """
  found: dict[str, str] = {}

  def interceptor(next_fun, call_args, call_kwargs, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, nn.Conv):
      path = "/".join(module.path)
      found[path] = (module.effective_implementation if isinstance(module, Conv) else "xla")
    return next_fun(*call_args, **call_kwargs)

  def run():
    with nn.intercept_methods(interceptor):
      key = jax.random.key(0)
      return model.init({"params": key, "dropout": key}, *args, **kwargs)

  jax.eval_shape(run)
  return found


__all__ = ["Activation", "Conv", "IMPLEMENTATIONS", "conv_im2col", "describe_implementations",
           "extract_patches", "global_average_pool", "he_normal", "resolve_implementation"]
