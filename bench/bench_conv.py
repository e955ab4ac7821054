"""Convolution implementations inside a population (`lax.map`) on this machine's backend.

    python -m bench.bench_conv                      # SmallCNN and All-CNN-C, 'xla' and 'im2col'
    python -m bench.bench_conv --models small_cnn --steps 20

Prints milliseconds per training step (forward, backward and an SGD update of every member) of
a population of `--population` networks run with `jax.lax.map`, the way actbench trains on CPU,
for each conv implementation of `actbench.models.layers.Conv`. SmallCNN uses a batch of 64
digits-sized images (8x8x1), All-CNN-C a batch of 32 CIFAR-sized ones (32x32x3). On a 2-core CPU
the 'xla' All-CNN-C step takes minutes: `--max_seconds` stops timing a configuration after the first
timed step that ends past it.

Measured on the 2-core development machine (population 4, ms per step):
  SmallCNN   xla 42.6    im2col 11.0    (3.9x)
  All-CNN-C  xla 142252  im2col 2323    (61x; compile + first step 191 s and 10 s)
"""

import argparse
import time

import jax
import optax

from actbench import models

CONFIGS = {  # model name -> (batch size, image shape)
    "small_cnn": (64, (8, 8, 1)),
    "allcnnc": (32, (32, 32, 3)),
}


def make_step(model, images, labels, learning_rate=0.01):
  """A jitted population step: lax.map over (params, dropout key) of each member."""

  def member_step(args):
    params, key = args

    def loss_fn(params):
      logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads), loss

  return jax.jit(lambda params, keys: jax.lax.map(member_step, (params, keys)))


def bench(name, implementation, population, steps, max_seconds):
  """(compile + first step seconds, ms per later step, number of timed steps)."""
  batch, shape = CONFIGS[name]
  model = models.get_model(name, act=jax.nn.swish, conv_implementation=implementation)
  images = jax.random.normal(jax.random.key(0), (batch, *shape))
  labels = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
  params = jax.jit(jax.vmap(lambda k: model.init(k, images[:1])["params"]))(
      jax.random.split(jax.random.key(2), population))
  keys = jax.random.split(jax.random.key(3), population)
  step = make_step(model, images, labels)

  start = time.perf_counter()
  params, losses = step(params, keys)
  jax.block_until_ready(losses)
  first = time.perf_counter() - start
  start = time.perf_counter()
  done = 0
  while done < steps:
    params, losses = step(params, keys)
    jax.block_until_ready(losses)
    done += 1
    if time.perf_counter() - start > max_seconds:
      break
  return first, (time.perf_counter() - start) / done * 1e3, done


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
  parser.add_argument("--implementations", nargs="+", default=["xla", "im2col"],
                      choices=["xla", "im2col"])
  parser.add_argument("--population", type=int, default=4)
  parser.add_argument("--steps", type=int, default=10, help="timed steps after the first")
  parser.add_argument("--max_seconds", type=float, default=30.0)
  args = parser.parse_args()

  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"population {args.population} under lax.map")
  print(f"{'model':10s} {'batch':>5s} {'impl':7s} {'compile+1st (s)':>15s} {'ms/step':>10s} "
        f"{'steps':>5s}")
  results = {}
  for name in args.models:
    for implementation in args.implementations:
      first, ms, done = bench(name, implementation, args.population, args.steps,
                              args.max_seconds)
      results[name, implementation] = ms
      print(f"{name:10s} {CONFIGS[name][0]:5d} {implementation:7s} {first:15.2f} {ms:10.1f} "
            f"{done:5d}", flush=True)
    if (name, "xla") in results and (name, "im2col") in results:
      print(f"{name}: im2col is {results[name, 'xla'] / results[name, 'im2col']:.1f}x "
            "faster than xla")


if __name__ == "__main__":
  main()
