"""The flops section of bench/accelerator_check.py: XLA's cost analysis against FLOPs counted
by hand (a dense layer's forward and backward, All-CNN-C's forward, a loop), so that the
throughput figures built on XLA's counts can be trusted."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from actbench.engine import model_factory
from bench.accelerator_report import Report, attempt
from configs import cnn


def cost_flops(cost) -> float | None:
  """The 'flops' of a cost analysis (a dict, or a list of one per program on older jax)."""
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def lowered_flops(fn: Callable, *abstract_args) -> float | None:
  """XLA's FLOPs of `fn` before optimization, lowered for the CPU: GPU backends (plugins) do
  not analyse an uncompiled program, and optimized programs hide convolutions in library calls
  and count loops once; the unoptimized program counts every convolution and matmul as such."""
  with jax.default_device(jax.devices("cpu")[0]):
    return cost_flops(jax.jit(fn).lower(*abstract_args).cost_analysis())


def dense_check(batch: int = 256, width_in: int = 512, width_out: int = 1024) -> dict:
  """One dense layer's forward and backward: 2*B*M*N FLOPs for y = x W, as many for each of
  dx = g W^T and dW = x^T g (g a given cotangent, so that nothing folds away): 6*B*M*N."""
  def forward_backward(x, w, g):
    y, pullback = jax.vjp(lambda x, w: x @ w, x, w)
    return y, pullback(g)
  args = [jax.ShapeDtypeStruct(s, jnp.float32)
          for s in ((batch, width_in), (width_in, width_out), (batch, width_out))]
  concrete = [jnp.ones(a.shape, a.dtype) for a in args]
  return _check_row(f"dense {batch}x{width_in}x{width_out}, forward and backward",
                    6 * batch * width_in * width_out, lowered_flops(forward_backward, *args),
                    cost_flops(jax.jit(forward_backward).lower(*concrete).compile()
                               .cost_analysis()))


# (features, kernel, stride, 'SAME' or 'VALID') of All-CNN-C's convolutions, written from the
# paper (Springenberg et al. 2015, model C), independently of actbench.models.AllCNNC.
ALLCNNC_LAYERS = ((96, 3, 1, "SAME"), (96, 3, 1, "SAME"), (96, 3, 2, "SAME"),
                  (192, 3, 1, "SAME"), (192, 3, 1, "SAME"), (192, 3, 2, "SAME"),
                  (192, 3, 1, "VALID"), (192, 1, 1, "VALID"), (10, 1, 1, "VALID"))


def allcnnc_forward_flops(batch: int, side: int = 32, channels: int = 3) -> int:
  """All-CNN-C's forward multiply-adds, by hand from its layer shapes, times 2."""
  total = 0
  for features, kernel, stride, padding in ALLCNNC_LAYERS:
    side = -(-side // stride) if padding == "SAME" else (side - kernel) // stride + 1
    total += 2 * side * side * features * kernel * kernel * channels
    channels = features
  return batch * total


def allcnnc_check(batch: int = 8) -> dict:
  """All-CNN-C's forward pass (float32, inference) against the count by hand."""
  model = model_factory.from_config(cnn.get_config(), 10)(jax.nn.relu)
  images = jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)

  def forward(variables, x):
    return model.apply(variables, x, train=False)

  concrete = (jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), variables),
              jnp.zeros(images.shape, images.dtype))
  return _check_row(f"All-CNN-C forward, batch {batch}", allcnnc_forward_flops(batch),
                    lowered_flops(forward, variables, images),
                    cost_flops(jax.jit(forward).lower(*concrete).compile().cost_analysis()))


def loop_check(trips: int = 8, size: int = 128) -> dict:
  """A lax.map of `trips` matmuls: XLA's cost analysis counts a loop body once, so a population
  program's own count would be one member's (lax.map) or one step's (its scan over steps)."""
  def mapped(xs, w):
    return jax.lax.map(lambda x: x @ w, xs)
  args = [jax.ShapeDtypeStruct((trips, size, size), jnp.float32),
          jax.ShapeDtypeStruct((size, size), jnp.float32)]
  concrete = [jnp.ones(a.shape, a.dtype) for a in args]
  row = _check_row(f"lax.map of {trips} matmuls {size}^3", 2 * trips * size**3,
                   lowered_flops(mapped, *args),
                   cost_flops(jax.jit(mapped).lower(*concrete).compile().cost_analysis()))
  row["note"] = "XLA counts a loop body once: expect a ratio of 1/trips"
  return row


def _check_row(program: str, by_hand: float, lowered: float | None,
               compiled: float | None) -> dict:
  return {"program": program, "by_hand": float(by_hand), "lowered_cpu": lowered,
          "compiled": compiled,
          "ratio_lowered": lowered / by_hand if lowered else None,
          "ratio_compiled": compiled / by_hand if compiled else None}


def run_flop_checks(report: Report) -> None:
  for check in (dense_check, allcnnc_check, loop_check):
    row = attempt({"program": check.__name__}, check)
    report.add("flops", row)
