"""Population training against training one activation at a time, on the quickstart task.

    python -m bench.bench_train [--members 32] [--epochs 10] [--memory-members 128]

Targets (issue 3, on the 2-core development machine):
  - 32 distinct activations x 1 seed x 10 epochs: the population in at most half the wall time
    of training them one after another with a separately jitted step per activation (what a
    user would write); model-epochs/s and compile time of both are printed;
  - a population of 128 under 4 GB peak memory (measured in a fresh process).
"""

import argparse
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import actbench
from actbench import models
from actbench.engine import data, optim, train
from actbench.expr import operators, space
from configs import quickstart


def candidate_activations(count: int) -> list[str]:
  """The 8 baselines, then class representatives of the benchmark space (seeded choice)."""
  representatives = space.representatives(space.enumerate(space.BENCHMARK_SCHEMA))
  chosen = np.random.RandomState(0).choice(len(representatives), count, replace=False)
  names = [f"{b}(x)" for b in operators.BASELINES]
  names += [representatives[i] for i in chosen if representatives[i] not in names]
  return names[:count]


def _jitted_step(model, optimizer):
  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return step


def one_at_a_time(config, dataset, names):
  """A plain Flax/optax loop per activation, each with its own jitted step.

  Returns (wall seconds, seconds spent in first calls, i.e. compiling)."""
  steps_per_epoch = dataset.train.num_batches(config.train.batch_size)
  optimizer = optim.make_optimizer(config.train, steps_per_epoch)
  compile_s, start = 0.0, time.perf_counter()
  for name in names:
    model = models.get_model("small_cnn", act=actbench.compile(name), num_classes=10)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"]
    opt_state = optimizer.init(params)

    step = _jitted_step(model, optimizer)
    first = True
    for epoch in range(config.train.num_epochs):
      for batch in dataset.train.batches(config.train.batch_size, seed=0, epoch=epoch):
        call_start = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, batch["image"], batch["label"])
        if first:  # the first call compiles
          jax.block_until_ready(loss)
          compile_s += time.perf_counter() - call_start
          first = False
    jax.block_until_ready(loss)
  return time.perf_counter() - start, compile_s


def population(config, dataset, names):
  """Returns (wall seconds, wall seconds of a second run reusing the compiled programs)."""
  start = time.perf_counter()
  result = train.train_population(config, names, [0], dataset=dataset)
  wall = time.perf_counter() - start
  start = time.perf_counter()
  train.train_population(config, names, [0], dataset=dataset)
  return wall, time.perf_counter() - start, result


def peak_memory_mb(members: int, epochs: int) -> float:
  script = (
      "import resource; from actbench import train; from configs import quickstart; "
      "import bench.bench_train as b; c = quickstart.get_config(); "
      f"c.train.num_epochs = {epochs}; "
      f"train.train_population(c, b.candidate_activations({members // 4}), [0, 1, 2, 3]); "
      "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
  out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                       text=True).stdout
  return float(out.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--members", type=int, default=32)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--memory-members", type=int, default=128)
  args = parser.parse_args()
  config = quickstart.get_config()
  config.train.num_epochs = args.epochs
  dataset = data.load("digits")
  names = candidate_activations(args.members)
  model_epochs = len(names) * args.epochs
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"{len(names)} activations x {args.epochs} epochs")

  pop_wall, pop_warm, result = population(config, dataset, names)
  print(f"population (strategy {train.resolve_strategy('auto')}, {len(result.history)} "
        f"schema group(s), {sum(result.diverged)} diverged): {pop_wall:.1f} s wall, "
        f"{model_epochs / pop_wall:.1f} model-epochs/s; compiling ~{pop_wall - pop_warm:.1f} s "
        f"(a second run with the programs compiled: {pop_warm:.1f} s, "
        f"{model_epochs / pop_warm:.1f} model-epochs/s)")
  seq_wall, seq_compile = one_at_a_time(config, dataset, names)
  print(f"one at a time: {seq_wall:.1f} s wall ({seq_compile:.1f} s of it compiling "
        f"{len(names)} steps), {model_epochs / seq_wall:.1f} model-epochs/s")
  print(f"population / one-at-a-time wall time: {pop_wall / seq_wall:.2f} (target <= 0.5)")
  if args.memory_members:
    peak = peak_memory_mb(args.memory_members, 1)
    print(f"population of {args.memory_members}: peak memory {peak:.0f} MB (target < 4096)")


if __name__ == "__main__":
  main()
