"""Fisher features of activations for an experiment config: its model, one training batch.

`config.fisher.method` picks the spectrum:

  kfac     the paper's: per-layer K-FAC blocks, log-eigenvalue CDFs (kfac.py); every candidate
           of a population in one compiled program.
  lanczos  beyond the paper: the spectral density of the exact empirical Fisher of all
           parameters by stochastic Lanczos quadrature (lanczos.py), as one CDF over
           log-eigenvalues; every candidate of a population in one compiled program.

    from actbench import fisher
    result = fisher.features(config, ["relu(x)", "swish(x)"])
    result.features      # (2, d) float32; NaN rows for result.failed
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np

from actbench import defaults
from actbench.engine import objectives, population, train
from actbench.errors import ConfigError
from actbench.fisher import kfac, lanczos
from actbench.fisher.kfac import FisherFeatures

METHODS = ("kfac", "lanczos")


def fisher_batch(config, dataset) -> tuple[np.ndarray, np.ndarray]:
  """The first config.fisher.batch_size training examples in epoch 0's order for config.seed,
  preprocessed for evaluation (no augmentation; config.train.eval_crop_fraction): (images
  float32, labels int32)."""
  batch_size = int(config.fisher.batch_size)
  rows = dataset.train.batch_indices(batch_size, seed=int(config.seed), epoch=0)
  if not len(rows):
    raise ConfigError(f"config.fisher.batch_size {batch_size} is larger than the training "
                      f"split ({dataset.train.num_examples} examples)")
  batch = dataset.train.gather(rows[0])
  images = np.asarray(objectives.evaluation_inputs(config.train, dataset, batch["image"]),
                      np.float32)
  return images, np.asarray(batch["label"], np.int32)


def features(config, names: Sequence[str], *, dataset=None, make_model=None) -> FisherFeatures:
  """Fisher CDF features of `names` with config's model (or `make_model`, act -> flax Module)
  at initialization (config.fisher.seed) on one training batch of config's data (or
  `dataset`). Failed candidates get NaN rows and a reason in `failed`."""
  if isinstance(names, str):
    raise TypeError("names must be a list of activation names, got a single string")
  names = list(names)
  config = defaults.complete(config)
  cfg = config.fisher
  if cfg.method not in METHODS:
    raise ConfigError(f"config.fisher.method must be one of {METHODS}, got {cfg.method!r}")
  dataset, make_model = train.task(config, dataset, make_model)
  images, labels = fisher_batch(config, dataset)
  seed = int(cfg.seed)
  encoding = population.form(names, config.population.schema)
  if cfg.method == "kfac":
    return kfac.population_features(
        make_model, encoding, encoding.encode(names), images, labels, seed=seed,
        fisher_type=cfg.type, key=jax.random.PRNGKey(seed) if cfg.type == "sampled" else None,
        batch_chunk=int(cfg.batch_chunk) or None, published_shift=bool(cfg.published_shift),
        eigenvalue_floor=float(cfg.eigenvalue_floor), floor_mode=cfg.floor_mode,
        eigenvalues=cfg.eigenvalues, **population.program_options(config))
  return _lanczos_features(config, names, encoding, make_model, images, labels, seed)


def _lanczos_features(config, names, encoding, make_model, images, labels,
                      seed) -> FisherFeatures:
  cfg = config.fisher
  num_bins = int(cfg.lanczos_bins)
  start = time.perf_counter()
  variables = kfac.init_variables(make_model, images.shape[1:], seed)
  params = variables["params"]
  others = {k: v for k, v in variables.items() if k != "params"}
  densities = lanczos.population_spectral_density(
      _model_apply(make_model, others), encoding, encoding.encode(names), params, images,
      labels, num_probes=int(cfg.lanczos_probes), seed=seed,
      chunk_size=int(cfg.batch_chunk) or None, **population.program_options(config))
  rows, failed = [], {}
  for index, density in enumerate(densities):
    row = lanczos.cdf_feature(density.nodes, density.weights, num_bins)
    if density.failure or not np.all(np.isfinite(row)):
      failed[index] = density.failure or "no positive eigenvalue mass in range"
      row = np.full(num_bins, np.nan, np.float32)
    rows.append(row)
  return FisherFeatures(names=names, features=np.stack(rows).astype(np.float32), failed=failed,
                        dropped=np.full((len(names), 0), -1, np.int64), layers=[], uncovered=[],
                        seconds={"total": time.perf_counter() - start})


def _model_apply(make_model, others):
  """activation -> (params, images) -> logits in inference mode, the model's other variables
  (batch statistics) fixed."""
  def make_apply(act):
    model = make_model(act)
    return lambda params, x: model.apply({"params": params, **others}, x, train=False)
  return make_apply
