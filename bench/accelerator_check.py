"""Everything an accelerator changes, measured in one run: about 8 minutes on one NVIDIA H200.

    python -m bench.accelerator_check --out=DIR          # one accelerator chip, ~8 min
    python -m bench.accelerator_check --out=DIR --tiny   # the same code paths on a CPU, ~1 min

Issue 16. A device is lent rarely and briefly, so one command answers every question that needs
one, and whatever goes wrong in one measurement (out of memory, a compile error) is recorded as
such while the others go on. Sections:

  flops     XLA's cost analysis against FLOPs counted by hand (a dense layer's forward and
            backward; All-CNN-C's forward), so that the figures below can be trusted; and a
            loop, which XLA counts once whatever its trip count (why the FLOPs of a population
            program are its members' step FLOPs times the population, not XLA's count of it).
  training  All-CNN-C and ResNet-56 on CIFAR-10-shaped random data, float32 and bfloat16:
            populations of 1, 8, 32, 128 and 256 under `population.strategy` vmap, grouped
            (groups of 8 members sorted by operator, only the operators a group selects run)
            and map (the program a search compiles: activations encoded over the benchmark
            space), against one plainly jitted model per activation ('single'). Per program:
            compile time (the first call, which users feel once per search) apart from the
            steady step time,
            model-epochs per second (45,000 images an epoch), achieved TFLOP/s and their
            fraction of the chip's bf16 and fp32 peaks, and device memory per member.
  vision    MobileViTv2-0.5 (the ViT recipe) and ResNet-50 at 160 px in bfloat16: step time and
            memory per member at a population of 1, then the largest population the device
            memory fits (predicted from that memory, then run).
  fisher    K-FAC Fisher features (`fisher.features`) of All-CNN-C and ResNet-56 populations of
            64 and 256 under the strategy 'auto' picks and 'grouped', with the factors'
            eigenvalues on the host (float64, every core) and, under 'auto', on the device
            (float64 and float32: `config.fisher.eigenvalues`): features per second, the wall
            time split into setup, compile, device and host (eigendecompositions when on the
            host, and histograms).
  compile   every program's compile and first-call time, gathered from the sections above.

FLOPs of a training step are those of one model's step (forward, backward, optimizer) by XLA's
cost analysis of the unoptimized program (lowered for the CPU, which every backend can count),
times the population: the useful work, as in "model FLOPs utilization" (a vmap population also
evaluates every operator of the search space at each activation site, which is not counted).
Peaks are dense datasheet figures (PEAK_TFLOPS); on other devices, CPUs included, the fraction
is reported as unknown rather than made up. Memory is that of the compiled program (XLA's
memory analysis: arguments, outputs and temporaries), against the device's allocator limit
(75% of an NVIDIA GPU unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise).

Sized for one chip: the whole check has a wall-clock budget (--budget-s), shared out between
the sections as they start (what one leaves goes to the next); a measurement the budget cannot
afford, judged from the ones before it, is recorded as skipped, and so are the populations
larger than one that did not fit. DIR/accelerator_check.json is rewritten after every
measurement, so a run killed by a timeout keeps what it measured. Its keys: env (device kind,
platform, jax version, date, peak_tflops or peak_note 'unknown peak', memory_bytes_limit, the
sizes), flops, training, vision, fisher (one row per measurement, each with a status 'ok',
'oom', 'failed' or 'skipped' and an error saying why), vision_largest (per model: the largest
population run, the predicted one), compile, section_errors, wall_s (since the check started),
process_wall_s (imports and device start-up included) and complete.

The bookkeeping (budget, report, failures, peaks, the table) is in bench/accelerator_report.py,
the flops section in bench/accelerator_flops.py.

--tiny (tests/test_accelerator_check.py) runs every section and code path once, not every
combination, with XLA's cheapest compiler settings, in about a minute on a 2-core CPU: every
model, dtype, strategy and population of 1 and 2 once, on 2-image batches (All-CNN-C float32,
ResNet-8 bfloat16), activations over two operators instead of the whole space, ResNet-50's
smoke model at 64 px (add `--vision-models mobilevit resnet50` for MobileViTv2's, which alone
compiles for half a minute), Fisher features of 2 members. Its figures mean nothing; its JSON
has every key.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import actbench
from actbench import fisher
from actbench.engine import data, model_factory, objectives, optim, population
from actbench.engine import trainer as trainer_lib
from actbench.expr import space
from bench import bench_fisher, bench_vision
from bench.accelerator_flops import cost_flops, lowered_flops, run_flop_checks
from bench.accelerator_report import (
    Budget, PredictedOutOfMemory, Report, attempt, describe, environment, memory_limit,
    print_tables, skipped, throughput)
from configs import cnn, resnet

CIFAR_EPOCH_IMAGES = 45_000  # CIFAR-10's 50,000 training images less the 5,000 held out
TINY_ACTIVATIONS = ("relu(x)", "tanh(x)")
TINY_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
SECTIONS = ("flops", "training", "vision", "fisher")


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What the check measures, and how big."""

  budget_s: float  # wall-clock budget of the measurements (startup excluded)
  # The CIFAR models trained, each with its (dtype, strategy, population) in the order
  # measured: what is measured first survives the budget ('single': one jitted model).
  training: tuple[tuple[str, tuple[tuple[str, str, int], ...]], ...]
  cifar_batch: int
  cifar_steps: int  # training steps per compiled call
  resnet_depth: int  # 56; 8 for --tiny
  vision_models: tuple[str, ...]  # of bench_vision.RECIPES
  vision_smoke: bool  # the configs' :smoke models (--tiny)
  vision_image_size: int
  vision_batch: int
  vision_steps: int
  vision_max_population: int
  fisher_populations: tuple[int, ...]
  fisher_batch: int
  schema: str  # populations encoded over this space; '' = over the activations' own operators
  activations: tuple[str, ...]  # () = the benchmark space's (bench_fisher.population_names)
  min_timed_s: float  # steady state: calls are timed until this long...
  max_timed_calls: int  # ...or this many
  group_size: int = population.DEFAULT_GROUP_SIZE  # members per vmapped group of 'grouped'
  # Fisher series measured at each population, in order: (model, population strategy, where
  # the factor eigenvalues are computed: config.fisher.eigenvalues).
  fisher_series: tuple[tuple[str, str, str], ...] = ()


def fisher_series(models=("allcnnc", "resnet56"),
                  series=(("auto", "host"), ("grouped", "host"), ("auto", "device"),
                          ("auto", "device_float32"))) -> tuple[tuple[str, str, str], ...]:
  """Every model with every (strategy, eigenvalues), All-CNN-C first."""
  return tuple((model, strategy, eigenvalues) for model in models
               for strategy, eigenvalues in series)


def training_plan(dtypes=("bfloat16", "float32"), strategies=("vmap", "grouped", "map"),
                  populations=(1, 8, 32, 128, 256)) -> tuple[tuple[str, str, int], ...]:
  """The single model in every dtype, then per dtype each strategy's populations from the
  smallest (one that does not fit ends its series)."""
  plan = [(dtype, "single", 1) for dtype in dtypes]
  for dtype in dtypes:
    plan += [(dtype, strategy, count) for strategy in strategies for count in populations]
  return tuple(plan)


DEFAULT = Sizes(
    budget_s=450.0, training=(("allcnnc", training_plan()), ("resnet56", training_plan())),
    cifar_batch=128, cifar_steps=4, resnet_depth=56, vision_models=("mobilevit", "resnet50"),
    vision_smoke=False, vision_image_size=160, vision_batch=256, vision_steps=2,
    vision_max_population=64, fisher_populations=(64, 256), fisher_batch=128,
    schema=space.BENCHMARK_SCHEMA, activations=(), min_timed_s=0.5, max_timed_calls=20,
    fisher_series=fisher_series())

# A minute of XLA:CPU compiles on 2 cores: every section and code path once, not every
# combination (every model, dtype, strategy and population of 1 and 2 once; ResNet-8;
# ResNet-50's smoke model at one member: MobileViTv2's alone compiles for half a minute,
# --vision-models adds it; Fisher features of 2 members).
TINY = dataclasses.replace(
    DEFAULT, budget_s=600.0,
    training=(("allcnnc", (("float32", "single", 1), ("float32", "vmap", 2),
                           ("float32", "grouped", 2), ("float32", "map", 1))),
              ("resnet56", (("bfloat16", "single", 1), ("bfloat16", "vmap", 1),
                            ("bfloat16", "map", 2)))),
    cifar_batch=2, cifar_steps=1, resnet_depth=8,
    vision_models=("resnet50",), vision_smoke=True, vision_image_size=64, vision_batch=2,
    vision_steps=1, vision_max_population=1, fisher_populations=(2,), fisher_batch=4,
    schema="", activations=TINY_ACTIVATIONS, min_timed_s=0.0, max_timed_calls=1,
    group_size=1,  # 'grouped' over 2 members: two groups, sorted
    # The device eigenvalues on ResNet-8's small factors only: All-CNN-C's 1729 x 1729 take
    # XLA:CPU 7 s.
    fisher_series=(("allcnnc", "auto", "host"), ("resnet56", "auto", "host"),
                   ("resnet56", "auto", "device")))

# ---- one model trained alone: the baseline, and the FLOPs of a member's step ----


def plain_step(config, num_classes: int, activation: str):
  """(init, step) of one model trained alone: what a user writes with Flax and optax for one
  activation (as bench_train's loop), with the config's model, loss and optimizer, dropout and
  batch norm; no augmentation."""
  model = model_factory.from_config(config, num_classes)(actbench.compile(activation))
  optimizer = optim.make_optimizer(config.train, 100)
  loss_of = objectives.training_loss(config.train)

  def init(key, images):
    variables = model.init({"params": key, "dropout": key}, images[:1], train=False)
    params = variables["params"]
    return params, variables.get("batch_stats", {}), optimizer.init(params)

  def step(params, batch_stats, opt_state, images, labels, key):
    def loss_fn(params):
      variables = {"params": params}
      if batch_stats:
        logits, updates = model.apply({**variables, "batch_stats": batch_stats}, images,
                                      train=True, mutable=["batch_stats"], rngs={"dropout": key})
        new_stats = updates["batch_stats"]
      else:
        logits = model.apply(variables, images, train=True, rngs={"dropout": key})
        new_stats = batch_stats
      loss = jnp.mean(loss_of(logits, jax.nn.one_hot(labels, num_classes)))
      return loss, new_stats
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  return init, step


def member_step_flops(config, num_classes: int, image_shape: tuple, batch: int,
                      activation: str) -> float | None:
  """FLOPs of one member's training step (forward, backward, optimizer), counted on the
  unoptimized program (`lowered_flops`); nothing runs. Should that fail, the count of the
  step compiled for the device (no loop in it, so counted whole)."""
  init, step = plain_step(config, num_classes, activation)
  images = jax.ShapeDtypeStruct((batch,) + tuple(image_shape), jnp.float32)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
  key = jax.eval_shape(lambda: jax.random.key(0))
  state = jax.eval_shape(init, key, images)
  try:
    return lowered_flops(step, *state, images, labels, key)
  except Exception as error:  # pylint: disable=broad-except
    print(f"  (FLOPs of the unoptimized step: {describe(error)}; counting the compiled one)",
          flush=True)
    return cost_flops(jax.jit(step).lower(*state, images, labels, key).compile()
                      .cost_analysis())


def measure_single(config, num_classes: int, image_shape: tuple, batch: int, steps: int,
                   activation: str, sizes: Sizes) -> dict:
  """One plainly jitted model: compile, first call and steady step time, one call per step."""
  init, step = plain_step(config, num_classes, activation)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((batch,) + tuple(image_shape), np.float32))
  labels = jnp.asarray(rng.integers(0, num_classes, batch), jnp.int32)
  key = jax.random.key(0)
  start = time.perf_counter()
  state = jax.block_until_ready(jax.jit(init)(key, images))
  init_s = time.perf_counter() - start
  compiled, times = _compile(jax.jit(step), *state, images, labels, key)

  def run(state):
    for _ in range(steps):
      *state, loss = compiled(*state, images, labels, key)
    return tuple(state), loss

  needed = program_bytes(compiled)
  return {"init_s": init_s, **times, **_timed(run, state, steps, sizes),
          "program_bytes": needed, "bytes_per_member": needed,
          "xla_program_flops": _compiled_flops(compiled)}


def _compile(jitted, *args) -> tuple[Any, dict]:
  """Ahead-of-time lowering and compilation, timed apart from running."""
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  return compiled, {"lower_s": lowered_at - start,
                    "compile_s": time.perf_counter() - lowered_at}


def _compiled_flops(compiled) -> float | None:
  try:
    return cost_flops(compiled.cost_analysis())
  except Exception:  # pylint: disable=broad-except  # informative only
    return None


def program_bytes(compiled) -> int | None:
  """Device bytes a compiled program needs: arguments, outputs and temporaries."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes -
             m.alias_size_in_bytes)


def _timed(run: Callable, state, steps: int, sizes: Sizes) -> dict:
  """The first run (after compiling: what remains of the first call), then the steady state:
  calls of `steps` steps until sizes.min_timed_s or sizes.max_timed_calls. `run(state)` returns
  (state, losses)."""
  start = time.perf_counter()
  state, loss = jax.block_until_ready(run(state))
  first_run_s = time.perf_counter() - start
  calls, start = 0, time.perf_counter()
  while calls < max(sizes.max_timed_calls, 1):
    state, loss = jax.block_until_ready(run(state))
    calls += 1
    if time.perf_counter() - start >= sizes.min_timed_s:
      break
  elapsed = time.perf_counter() - start
  return {"first_run_s": first_run_s, "timed_calls": calls, "steps_per_call": steps,
          "step_s": elapsed / (calls * steps),
          "loss_finite": bool(np.all(np.isfinite(np.asarray(loss, np.float32))))}


# ---- populations ----


def cycled(names, count: int) -> list[str]:
  return [names[i % len(names)] for i in range(count)]


def measure_population(config, dataset, names: list[str], count: int, steps: int,
                       sizes: Sizes) -> dict:
  """The population training program of `count` members (engine/trainer.py), compiled ahead of
  time and run on batches already on the device, so that its device time is what is timed
  (the host's data pipeline is bench_data's)."""
  encoding = population.form(names, config.population.schema)
  trainer = trainer_lib.PopulationTrainer(config, dataset, encoding)
  members = cycled(names, count)
  start = time.perf_counter()
  state = trainer.init(np.arange(count, dtype=np.int32))
  codes = trainer.put_members(encoding.encode(members))
  seeds = trainer.put_members(np.arange(count, dtype=np.int32))
  jax.block_until_ready(state)
  init_s = time.perf_counter() - start
  batch = dataset.train.gather(np.arange(steps * trainer.batch_size))
  images = trainer.put_shared(batch["image"].reshape((steps, trainer.batch_size) +
                                                     batch["image"].shape[1:]))
  labels = trainer.put_shared(batch["label"].reshape(steps, trainer.batch_size))
  first_step = trainer.put_shared(np.int32(0))
  compiled, times = _compile(trainer.train_program(), state, codes, seeds, images, labels,
                             first_step)
  needed, limit = program_bytes(compiled), memory_limit()
  if needed and limit and needed > limit:
    raise PredictedOutOfMemory(f"RESOURCE_EXHAUSTED (predicted): the program needs "
                               f"{needed / 2**30:.1f} GiB, the device has {limit / 2**30:.1f}")

  def run(state):
    state, totals = compiled(state, codes, seeds, images, labels, first_step)
    return state, totals["loss"]

  return {"init_s": init_s, **times, **_timed(run, state, steps, sizes),
          "program_bytes": needed, "bytes_per_member": needed / count if needed else None,
          "xla_program_flops": _compiled_flops(compiled),
          "resolved_strategy": trainer.strategy}


def _estimate_s(previous: dict | None, count: int, sizes: Sizes) -> float | None:
  """About how long measuring `count` members takes, from a measured program of the same
  section (compiling costs about the same; running scales with the members at worst)."""
  if not previous or previous.get("status") != "ok":
    return None
  scale = count / previous["population"]
  run_call = previous["step_s"] * previous["steps_per_call"] * scale
  return (previous["init_s"] * scale + previous["lower_s"] + previous["compile_s"] +
          run_call + max(run_call, sizes.min_timed_s))


def finish_row(row: dict, flops_per_member_step: float | None, peaks: dict | None,
               epoch_images: int | None) -> dict:
  """Throughput figures of a measured row: images, model-epochs, FLOPs per second."""
  if row.get("status") != "ok":
    return row
  count, batch = row["population"], row["batch_size"]
  row["first_call_s"] = row["lower_s"] + row["compile_s"] + row["first_run_s"]
  row["images_per_s"] = count * batch / row["step_s"]
  if epoch_images:
    row["epoch_images"] = epoch_images
    row["model_epochs_per_s"] = row["images_per_s"] / epoch_images
  row["flops_per_member_step"] = flops_per_member_step
  flops = flops_per_member_step * count if flops_per_member_step else None
  row.update(throughput(row, flops, peaks))
  return row


# ---- section: training of the CIFAR models ----


def cifar_config(model: str, dtype: str, strategy: str, sizes: Sizes):
  config = cnn.get_config() if model == "allcnnc" else resnet.get_config()
  if model == "resnet56":
    config.model.kwargs.depth = sizes.resnet_depth
  config.model.dtype = dtype
  config.population.strategy = strategy
  config.population.group_size = sizes.group_size
  config.population.schema = sizes.schema
  config.train.batch_size = sizes.cifar_batch
  config.train.steps_per_call = sizes.cifar_steps
  return config


def run_training(report: Report, budget: Budget, model: str, plan, names: list[str],
                 sizes: Sizes, peaks: dict | None) -> None:
  """One model's plan of (dtype, strategy, population); a population that does not fit (or
  fails) ends its series."""
  budget.start(f"training/{model}")
  dataset = data.synthetic("cifar10", num_train=sizes.cifar_batch * sizes.cifar_steps,
                           num_validation=0, num_test=0)
  shape = tuple(dataset.info.input_shape)
  flops: dict[str, float | None] = {}
  stopped: dict[tuple, str] = {}  # series -> why its larger populations are skipped
  previous: dict[Any, dict] = {}
  for dtype, strategy, count in plan:
    series = (dtype, strategy)
    row = {"model": model, "dtype": dtype, "strategy": strategy, "population": count,
           "batch_size": sizes.cifar_batch, "error": None}
    if strategy == "grouped":
      row["group_size"] = sizes.group_size
    reason = stopped.get(series) or budget.skip_reason(
        _estimate_s(previous.get(series) or previous.get("last"), count, sizes))
    if reason:
      report.add("training", skipped(row, reason))
      continue
    config = cifar_config(model, dtype, "auto" if strategy == "single" else strategy, sizes)
    if dtype not in flops:
      flops[dtype] = _attempt_value(functools.partial(
          member_step_flops, config, 10, shape, sizes.cifar_batch, names[0]))
    if strategy == "single":
      attempt(row, functools.partial(measure_single, config, 10, shape, sizes.cifar_batch,
                                     sizes.cifar_steps, names[0], sizes))
      row["activation"] = names[0]
    else:
      attempt(row, functools.partial(measure_population, config, dataset, names, count,
                                     sizes.cifar_steps, sizes))
    report.add("training", finish_row(row, flops[dtype], peaks, CIFAR_EPOCH_IMAGES))
    if row["status"] == "ok":
      previous[series] = previous["last"] = row
    elif strategy != "single":
      stopped[series] = (f"population {count} did not fit" if row["status"] == "oom"
                         else f"population {count} failed")


def _attempt_value(fn: Callable):
  try:
    return fn()
  except Exception as error:  # pylint: disable=broad-except
    print(f"  (FLOP count failed: {type(error).__name__}: {error})", flush=True)
    return None


# ---- section: ImageNet-class models ----


def vision_config(model: str, sizes: Sizes):
  """bench_vision's recipe of `model` ('mobilevit': configs/vit.py, 'resnet50':
  configs/imagenet_resnet50.py) in bfloat16; --tiny takes the configs' smoke models."""
  if sizes.vision_smoke:
    config = bench_vision.RECIPES[model]("smoke")
    config.dataset.image_size = sizes.vision_image_size
    config.train.batch_size = sizes.vision_batch
    config.train.steps_per_call = sizes.vision_steps
    config.model.dtype = "bfloat16"
  else:
    config = bench_vision.recipe(model, argparse.Namespace(
        image_size=sizes.vision_image_size, batch_size=sizes.vision_batch,
        steps=sizes.vision_steps, dtype="bfloat16"))
  config.population.schema = sizes.schema
  return config


def largest_population(row: dict, sizes: Sizes) -> int | None:
  """The largest population whose program the device memory should hold, from the measured
  program of one member (its bytes bound a member's share from above); None without a limit."""
  limit = memory_limit()
  if not limit or not row.get("program_bytes"):
    return None
  return max(1, min(int(0.9 * limit // row["program_bytes"]), sizes.vision_max_population))


def run_vision(report: Report, budget: Budget, names: list[str], sizes: Sizes,
               peaks: dict | None) -> None:
  """Population 1 of each model, then the largest population predicted to fit, which is run
  (and, if it does not fit after all, three quarters of it, while the budget lasts)."""
  budget.start("vision")
  tasks = {}
  for model in sizes.vision_models:
    config = vision_config(model, sizes)
    dataset = data.synthetic(config.dataset.name,
                             num_train=sizes.vision_batch * sizes.vision_steps, num_validation=0,
                             num_test=0, image_size=sizes.vision_image_size)
    shape = tuple(dataset.info.input_shape)
    flops = _attempt_value(functools.partial(
        member_step_flops, config, dataset.info.num_classes, shape, sizes.vision_batch,
        names[0]))
    tasks[model] = (config, dataset, flops)
    _vision_row(report, budget, model, tasks[model], names, 1, None, sizes, peaks)
  for model, task in tasks.items():
    first = next(r for r in report.data["vision"] if r["model"] == model)
    _vision_largest(report, budget, model, task, names, first, sizes, peaks)


def _vision_row(report, budget, model, task, names, count, previous, sizes, peaks) -> dict:
  config, dataset, flops = task
  row = {"model": model, "dtype": "bfloat16",
         "strategy": population.resolve_strategy(config.population.strategy),
         "population": count, "batch_size": sizes.vision_batch,
         "image_size": sizes.vision_image_size, "error": None}
  reason = budget.skip_reason(_estimate_s(previous, count, sizes))
  if reason:
    return report.add("vision", skipped(row, reason))
  attempt(row, functools.partial(measure_population, config, dataset, names, count,
                                 sizes.vision_steps, sizes))
  return report.add("vision", finish_row(row, flops, peaks, None))


def _vision_largest(report, budget, model, task, names, first, sizes, peaks) -> None:
  """Runs the population `largest_population` predicts, and three quarters of it while it
  does not fit; records the largest that ran in report.data['vision_largest'][model]."""
  summary = {"population": 1 if first["status"] == "ok" else 0,
             "verified": first["status"] == "ok", "predicted": None, "limit_reached": False}
  if first["status"] == "ok":
    predicted = largest_population(first, sizes)
    summary["predicted"] = predicted
    candidate = predicted if predicted else sizes.vision_max_population  # no limit: CPU
    while candidate > 1:
      row = _vision_row(report, budget, model, task, names, candidate, first, sizes, peaks)
      if row["status"] == "ok":
        summary.update(population=candidate, verified=True,
                       limit_reached=candidate >= sizes.vision_max_population)
        break
      if row["status"] != "oom":
        break
      candidate = candidate * 3 // 4
  report.data["vision_largest"][model] = summary
  report.save()


# ---- section: Fisher features ----


def run_fisher(report: Report, budget: Budget, names: list[str], sizes: Sizes) -> None:
  """Every series at the smallest population first, so that each gets measured."""
  budget.start("fisher")
  dataset = data.synthetic("cifar10", num_train=sizes.fisher_batch, num_validation=0,
                           num_test=0)
  previous: dict[tuple[str, str, str], dict] = {}
  for count in sizes.fisher_populations:
    for model, strategy, eigenvalues in sizes.fisher_series:
      config = cifar_config(model, "float32", strategy, sizes)
      config.fisher.batch_size = sizes.fisher_batch
      config.fisher.eigenvalues = eigenvalues
      row = {"model": model, "population": count, "batch_size": sizes.fisher_batch,
             "strategy": population.resolve_strategy(strategy), "eigenvalues": eigenvalues,
             "error": None}
      if row["strategy"] == "grouped":
        row["group_size"] = sizes.group_size
      series = (model, row["strategy"], eigenvalues)
      reason = budget.skip_reason(_fisher_estimate_s(previous.get(series), count))
      if reason:
        report.add("fisher", skipped(row, reason))
        continue
      attempt(row, functools.partial(measure_fisher, config, dataset, cycled(names, count)))
      report.add("fisher", row)
      if row["status"] == "ok":
        previous[series] = row


def measure_fisher(config, dataset, names: list[str]) -> dict:
  """`fisher.features` as a search calls it; its own clock splits the wall time."""
  start = time.perf_counter()
  result = fisher.features(config, names, dataset=dataset)
  total = time.perf_counter() - start
  compiled = total - result.seconds.get("compile", 0.0)
  return {"total_s": total, "seconds": dict(result.seconds),
          "cpu_seconds": dict(result.cpu_seconds), "features_per_s": len(names) / total,
          "features_per_s_compiled": len(names) / compiled if compiled > 0 else None,
          "failed_members": len(result.failed), "feature_length": int(result.features.shape[1]),
          "layers": len(result.layers)}


def _fisher_estimate_s(previous: dict | None, count: int) -> float | None:
  """Setup and compilation once; device and host time scale with the members."""
  if not previous:
    return None
  seconds = previous["seconds"]
  scale = count / previous["population"]
  return seconds.get("setup", 0) + (seconds.get("device", 0) + seconds.get("host", 0)) * scale


# ---- main ----


def activation_names(sizes: Sizes) -> list[str]:
  """The members' activations: functions of the benchmark space (bench_fisher's choice: the 8
  baselines, then seeded random ones with finite outputs), or --tiny's two."""
  if sizes.activations:
    return list(sizes.activations)
  count = max([p for _, plan in sizes.training for _, _, p in plan] +
              list(sizes.fisher_populations) + [sizes.vision_max_population])
  return bench_fisher.population_names(count)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="directory of accelerator_check.json")
  parser.add_argument("--tiny", action="store_true",
                      help="tiny sizes: every code path in about a minute on a CPU")
  parser.add_argument("--budget-s", type=float, default=None,
                      help="wall-clock budget of the measurements (default 450; --tiny 600)")
  parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
  parser.add_argument("--vision-models", nargs="+", choices=sorted(bench_vision.RECIPES),
                      help="default: mobilevit resnet50 (--tiny: resnet50)")
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  sizes = TINY if args.tiny else DEFAULT
  if args.budget_s is not None:
    sizes = dataclasses.replace(sizes, budget_s=args.budget_s)
  if args.vision_models:
    sizes = dataclasses.replace(sizes, vision_models=tuple(args.vision_models))
  if args.tiny:  # before the first computation, when XLA reads its flags
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TINY_XLA_FLAGS}".strip()
  # Compile times are measured: a persistent compilation cache would answer instead.
  jax.config.update("jax_enable_compilation_cache", False)
  report = Report(args.out, environment(sizes, args.tiny))
  peaks = report.data["env"]["peak_tflops"]
  print(f"{report.data['env']['device_kind']}: peaks {peaks or 'unknown peak'}; "
        f"budget {sizes.budget_s:.0f} s; writing {report.path}", flush=True)
  names = activation_names(sizes)
  weights = {"vision": 1.1, "fisher": 1.0}
  weights.update({f"training/{model}": 1.0 for model, _ in sizes.training})
  budget = Budget(sizes.budget_s, {k: v for k, v in weights.items()
                                   if k.split("/")[0] in args.sections})
  run_sections(report, budget, args.sections, names, sizes, peaks)
  report.save(complete=True)
  print_tables(report.data)
  return report.data


def run_sections(report: Report, budget: Budget, sections, names: list[str], sizes: Sizes,
                 peaks: dict | None) -> None:
  """The sections in order; one that fails outside its measurements (its data, its config)
  is recorded in section_errors and the others still run."""
  steps = []
  if "flops" in sections:
    steps.append(("flops", lambda: run_flop_checks(report)))
  if "training" in sections:
    for model, plan in sizes.training:
      steps.append((f"training/{model}", functools.partial(
          run_training, report, budget, model, plan, names, sizes, peaks)))
  if "vision" in sections:
    steps.append(("vision", lambda: run_vision(report, budget, names, sizes, peaks)))
  if "fisher" in sections:
    steps.append(("fisher", lambda: run_fisher(report, budget, names, sizes)))
  for name, step in steps:
    try:
      step()
    except Exception as error:  # pylint: disable=broad-except
      report.data["section_errors"][name] = describe(error)
      print(f"section {name} failed: {report.data['section_errors'][name]}", flush=True)
      report.save()


if __name__ == "__main__":
  main(sys.argv[1:])
