"""Throughput of actbench.engine.data: epoch orders, host batch reading, device augmentation.

    PYTHONPATH=. python bench/bench_data.py         # digits only: offline, seconds on a CPU
    PYTHONPATH=. python bench/bench_data.py --dataset=cifar10 --data_dir=~/tensorflow_datasets

Prints one line per measurement (examples per second, after a warm-up call). The host rate
must beat the device step rate, or population training is input bound.
"""

from __future__ import annotations

import time

from absl import app, flags
import jax
import numpy as np

from actbench.engine import data

_DATASET = flags.DEFINE_enum('dataset', 'digits', data.DATASETS, 'Dataset to read.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data directory.')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Examples per batch.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Batches per measurement.')


def _rate(label: str, fn, examples: int, repeats: int) -> None:
  jax.block_until_ready(fn())  # warm-up: compilation, caches
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn())
  seconds = (time.perf_counter() - start) / repeats
  print(f'{label:<40s} {examples / seconds:>14,.0f} examples/s')


def main(argv) -> None:
  del argv
  start = time.perf_counter()
  ds = data.load(_DATASET.value, data_dir=_DATA_DIR.value)
  print(f'{ds.info}\nloaded in {time.perf_counter() - start:.1f} s on {jax.default_backend()}')
  size = _BATCH.value
  _rate('batch_indices (1,281,167 examples)',
        lambda: data.batch_indices(1_281_167, size, seed=0, epoch=1), 1_281_167, 3)

  def read():
    for step, batch in enumerate(ds.train.batches(size, seed=0, epoch=0)):
      if step + 1 == _STEPS.value:
        return batch['label']
  steps = min(_STEPS.value, ds.train.num_batches(size))
  _rate(f'host batches (batch {size})', read, steps * size, 2)

  images = jax.device_put(ds.train.gather(np.arange(size))['image'])
  key = jax.random.key(0)
  for train in (True, False):
    augment = jax.jit(lambda x, k, train=train: ds.preprocess(x, key=k, train=train))
    _rate(f'device preprocess train={train}', lambda f=augment: f(images, key), size, 20)


if __name__ == '__main__':
  app.run(main)
