"""Speed and memory of the foundation: search spaces, equivalence classes, output features.

    python -m bench.bench_space

Targets (issue 2, on the 2-core development machine):
  - enumerate and classify the 5,103-name benchmark space in under 0.5 s;
  - output features of 100,000 functions of unary(binary(unary(x),unary(x))) in under 30 s
    with peak memory under 2 GB.
Each figure is measured in a fresh process, so that caches (parsed names) do not help.
"""

import subprocess
import sys
import textwrap

CLASSIFY = textwrap.dedent("""
    import time
    import actbench
    start = time.perf_counter()
    names = list(actbench.space.enumerate(actbench.space.BENCHMARK_SCHEMA))
    classes = actbench.space.equivalence_classes(names)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    actbench.space.equivalence_classes(names)
    warm = time.perf_counter() - start
    print(f"benchmark space: {len(names)} names, {len(classes)} classes, "
          f"enumerate + classify {cold:.3f} s (again, names parsed: {warm:.3f} s)")
""")

OUTPUTS = textwrap.dedent("""
    import itertools, resource, time
    import actbench
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    names = list(itertools.islice(
        actbench.space.enumerate("unary(binary(unary(x),unary(x)))"), 100_000))
    values = actbench.features.outputs(names)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"output features: {values.shape[0]} functions in {elapsed:.1f} s, "
          f"peak memory {peak:.0f} MB ({before:.0f} MB after importing actbench and jax)")
""")


def main():
  for script in (CLASSIFY, OUTPUTS):
    subprocess.run([sys.executable, "-c", script], check=True)


if __name__ == "__main__":
  main()
