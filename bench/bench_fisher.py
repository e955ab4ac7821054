"""Fisher (K-FAC CDF) features of a population of activations, on this machine's backend.

    python -m bench.bench_fisher                          # All-CNN-C and ResNet-56, 16 members
    python -m bench.bench_fisher --models allcnnc --members 4 --batch_chunk 64
    python -m bench.bench_fisher --models allcnnc --form table --conv_moments auto patches none

For each model: a CIFAR-10-shaped random batch (128 images 32x32x3, random labels), the
features of `--members` activations of the benchmark space `binary(unary(x),unary(x))` (the 8
baselines, then functions with finite outputs drawn with a fixed seed) by
`fisher.population_features` (lax.map over the members on CPU, convolutions 'im2col').
`--form space` encodes them over the whole space (`Encoding.for_space`: the program a search
compiles once and reuses for every population of the space; it is large, every activation
site switches over all 34 operators), `--form table` as a `FunctionTable` of just these
functions (a smaller program, compiled for this population).

`--conv_moments` says how convolution A factors are built, one child process each, side by
side: `auto` (the chooser's plan per layer, `moments.choose_num_shifted`), `patches` (im2col
everywhere: the reference), `shifted` (shifted moments along every spatial dimension) and
`none` (no conv A at all, zeros in its place: what the rest of the program costs, the floor of
any way of building A; its features are meaningless).

Prints the wall time split into setup (initialization, finding the layers), compile (tracing
and compiling the population program), device (running it) and host (float64
eigendecompositions, histograms); seconds per function amortized over the population with and
without the compilation; the process's CPU seconds per phase (all threads: on a shared
machine wall times also count other processes' turns, CPU times do not); and the peak resident
memory of the process (resource.getrusage ru_maxrss). Each model runs in its own subprocess so
that its peak memory is its own.

Targets on the 2-core development machine: at most 4 s per function for All-CNN-C and 8 s for
ResNet-56, peak memory under 8 GB.
"""

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time

import numpy as np

from actbench import models
from actbench.engine import population
from actbench.expr import features, space


def make_allcnnc(act):
  return models.AllCNNC(act=act, conv_implementation="im2col")


def make_resnet56(act):
  return models.ResNet56(act=act, conv_implementation="im2col")


BUILDERS = {"allcnnc": make_allcnnc, "resnet56": make_resnet56}


BASELINES = ("elu", "relu", "selu", "sigmoid", "softplus", "softsign", "swish", "tanh")


def population_names(count: int, seed: int = 0) -> list[str]:
  """The 8 baselines (as add(f(x),zero(x)), members of the space), then random functions of the
  space whose outputs on the reference points are finite (most others fail in the network and
  cost no eigendecomposition)."""
  names = [f"add({b}(x),zero(x))" for b in BASELINES]
  space_names = list(space.enumerate(space.BENCHMARK_SCHEMA))
  order = np.random.default_rng(seed).permutation(len(space_names))
  for start in range(0, len(order), 256):
    candidates = [space_names[i] for i in order[start:start + 256]]
    finite = np.isfinite(features.outputs(candidates)).all(axis=1)
    names += [name for name, ok in zip(candidates, finite) if ok]
    if len(names) >= count:
      break
  return names[:count]


def run_one(name: str, members: int, batch: int, batch_chunk: int, members_per_call: int,
            form: str, conv_moments: str):
  from actbench import fisher  # after the argument parsing: jax starts here
  from actbench.fisher import moments
  if conv_moments in ("patches", "shifted"):
    # The references beside the chooser: every convolution's A from im2col patches (0 shifted
    # dimensions), or from shifted moments along all of them.
    moments.choose_num_shifted = (
        lambda geometry, *_: 0 if conv_moments == "patches" else geometry.rank)
  elif conv_moments == "none":
    # The floor of any way of building conv A: the program without it (zeros in its place; the
    # features are then meaningless, the seconds are what the rest of the program costs).
    moments.conv_input_parts = lambda x, geometry, has_bias, num_shifted: (
        moments.conv_parts_zeros(geometry, x.shape[-1], has_bias, num_shifted))
  rng = np.random.default_rng(0)
  images = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, 10, batch)
  names = population_names(members)
  if form == "space":
    encoding = population.Encoding.for_space(space.BENCHMARK_SCHEMA)
  else:
    encoding = population.FunctionTable.of(names)
  codes = encoding.encode(names)
  start, start_cpu = time.perf_counter(), time.process_time()
  result = fisher.population_features(BUILDERS[name], encoding, codes, images, labels,
                                      batch_chunk=batch_chunk,
                                      members_per_call=members_per_call)
  total, total_cpu = time.perf_counter() - start, time.process_time() - start_cpu
  peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  return {
      "model": name, "form": form, "conv_moments": conv_moments, "members": members,
      "batch": batch, "batch_chunk": batch_chunk,
      "layers": len(result.layers), "uncovered": len(result.uncovered),
      "feature_length": int(result.features.shape[1]), "failed": len(result.failed),
      "total_s": total, **{f"{k}_s": v for k, v in result.seconds.items()},
      "total_cpu_s": total_cpu, **{f"{k}_cpu_s": v for k, v in result.cpu_seconds.items()},
      "s_per_function": total / members,
      "s_per_function_compiled": (total - result.seconds["compile"]) / members,
      "peak_rss_gb": peak_gb,
      "failures": {result.names[i]: reason for i, reason in result.failed.items()},
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["allcnnc", "resnet56"],
                      choices=sorted(BUILDERS))
  parser.add_argument("--members", type=int, default=16)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--batch_chunk", type=int, default=32)
  parser.add_argument("--members_per_call", type=int, default=16)
  parser.add_argument("--form", choices=["space", "table"], default="space")
  parser.add_argument("--conv_moments", nargs="+", default=["auto"],
                      choices=["auto", "patches", "shifted", "none"],
                      help="how convolution A factors are built, each in turn: the chooser's "
                           "plan (auto), im2col patches everywhere, shifted moments everywhere, "
                           "or not at all (none: what the rest of the program costs; its "
                           "features are meaningless and its host phase is not comparable)")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(run_one(args.models[0], args.members, args.batch, args.batch_chunk,
                             args.members_per_call, args.form, args.conv_moments[0])))
    return
  for name, conv_moments in itertools.product(args.models, args.conv_moments):
    command = [sys.executable, "-m", "bench.bench_fisher", "--child", "--models", name,
               "--members", str(args.members), "--batch", str(args.batch),
               "--batch_chunk", str(args.batch_chunk),
               "--members_per_call", str(args.members_per_call), "--form", args.form,
               "--conv_moments", conv_moments]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(f"{r['model']:9s} {r['form']:5s} A {r['conv_moments']:8s} members {r['members']}  "
          f"batch {r['batch']} (chunks of {r['batch_chunk']})  layers {r['layers']} "
          f"(+{r['uncovered']} uncovered)  "
          f"features {r['feature_length']}  failed {r['failed']}")
    print(f"          total {r['total_s']:.1f} s = setup {r['setup_s']:.1f} + compile "
          f"{r['compile_s']:.1f} + device {r['device_s']:.1f} + host {r['host_s']:.1f}")
    print(f"          CPU {r['total_cpu_s']:.1f} s = setup {r['setup_cpu_s']:.1f} + compile "
          f"{r['compile_cpu_s']:.1f} + device {r['device_cpu_s']:.1f} + host "
          f"{r['host_cpu_s']:.1f} (all threads; {r['total_cpu_s'] / r['total_s']:.2f} cores "
          f"busy on average)")
    print(f"          {r['s_per_function']:.2f} s per function ({r['s_per_function_compiled']:.2f} "
          f"without the compilation), peak RSS {r['peak_rss_gb']:.2f} GB")
    for fn, reason in r["failures"].items():
      print(f"          failed: {fn}: {reason}")
    sys.stdout.flush()


if __name__ == "__main__":
  main()
