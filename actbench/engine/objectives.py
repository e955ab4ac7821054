"""The training objective of `config.train`: augmented inputs, targets and the loss.

Every member of a population sees the same augmented batch, so this runs once per step, outside
the member loop, on the device:

  crop, flip       the dataset's augmentation (`data.Dataset.preprocess`): CIFAR pad-and-crop,
                   ImageNet-like random resized crop with `crop_min_scale`.
  RandAugment      `randaugment_layers` ops of strength `randaugment_magnitude` per image.
  mixup / CutMix   batch mixing with `mixup_alpha` / `cutmix_alpha` (CutMix with probability
                   `mixup_switch_prob` when both are on); targets become soft.

Targets are float (B, num_classes) rows (one-hot without mixing). The loss is

  'softmax_cross_entropy'         with `label_smoothing`;
  'sigmoid_binary_cross_entropy'  one sigmoid per class, averaged over classes, on targets
                                  thresholded at `target_threshold` (a mixed class counts as
                                  present when its weight exceeds it: the DeiT III recipe).

Evaluation uses the same loss on one-hot targets (no smoothing), and accuracy is always the
argmax of the logits against the label (the largest target weight when mixed).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from actbench.engine import augment

LOSSES = ("softmax_cross_entropy", "sigmoid_binary_cross_entropy")

Loss = Callable[[jax.Array, jax.Array], jax.Array]  # (logits, targets) -> per-example loss


def _get(cfg, name, default):
  return cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)


def check(cfg) -> None:
  """Raises ValueError naming the config.train field that is out of range."""
  loss = _get(cfg, "loss", LOSSES[0])
  if loss not in LOSSES:
    raise ValueError(f"config.train.loss must be one of {LOSSES}, got {loss!r}")
  ranges = {"label_smoothing": (0.0, 1.0), "target_threshold": (0.0, 1.0),
            "mixup_alpha": (0.0, None), "cutmix_alpha": (0.0, None),
            "mixup_switch_prob": (0.0, 1.0), "randaugment_magnitude": (0.0, 30.0),
            "randaugment_layers": (0, None)}
  for name, (low, high) in ranges.items():
    value = _get(cfg, name, low)
    if value < low or (high is not None and value > high):
      bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
      raise ValueError(f"config.train.{name} must be {bound}, got {value!r}")
  scale = float(_get(cfg, "crop_min_scale", 0.08))
  if not 0.0 < scale <= 1.0:
    raise ValueError(f"config.train.crop_min_scale must be in (0, 1], got {scale!r}")
  fraction = float(_get(cfg, "eval_crop_fraction", 0.875))
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"config.train.eval_crop_fraction must be in (0, 1], got {fraction!r}")


def _loss(kind: str, smoothing: float, threshold: float) -> Loss:
  if kind == "softmax_cross_entropy":
    def softmax_loss(logits, targets):
      if smoothing:
        targets = optax.smooth_labels(targets, smoothing)
      return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
    return softmax_loss

  def binary_loss(logits, targets):
    targets = augment.threshold_targets(targets, threshold)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets), -1)
  return binary_loss


def training_loss(cfg) -> Loss:
  """The per-example training loss of config.train."""
  return _loss(_get(cfg, "loss", LOSSES[0]), float(_get(cfg, "label_smoothing", 0.0)),
               float(_get(cfg, "target_threshold", 0.0)))


def evaluation_loss(cfg) -> Loss:
  """The per-example loss reported on evaluation splits: the training loss on one-hot targets,
  without label smoothing (thresholding leaves one-hot targets as they are)."""
  return _loss(_get(cfg, "loss", LOSSES[0]), 0.0, 0.0)


def mixes(cfg) -> bool:
  return _get(cfg, "mixup_alpha", 0.0) > 0 or _get(cfg, "cutmix_alpha", 0.0) > 0


def training_batch(cfg, dataset, key: jax.Array, images: jax.Array,
                   labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One step's raw host batch -> (network inputs, float targets (B, num_classes)).

  `key` decides every random choice of the step (same key: same batch)."""
  augment_images = bool(_get(cfg, "augment", True))
  inputs = dataset.preprocess(
      images, key=key, train=augment_images,
      crop_min_scale=float(_get(cfg, "crop_min_scale", 0.08)),
      randaugment=(int(_get(cfg, "randaugment_layers", 0)),
                   float(_get(cfg, "randaugment_magnitude", 0.0))))
  targets = augment.one_hot_targets(labels, dataset.info.num_classes)
  if augment_images and mixes(cfg):
    inputs, targets = augment.mixup_cutmix(
        jax.random.fold_in(key, 3), inputs, targets,
        mixup_alpha=float(_get(cfg, "mixup_alpha", 0.0)),
        cutmix_alpha=float(_get(cfg, "cutmix_alpha", 0.0)),
        switch_prob=float(_get(cfg, "mixup_switch_prob", 0.5)))
  return inputs, targets


def evaluation_inputs(cfg, dataset, images: jax.Array) -> jax.Array:
  """A host batch -> network inputs for evaluation (ImageNet-like data: the centre crop)."""
  return dataset.preprocess(images, train=False,
                            crop_fraction=float(_get(cfg, "eval_crop_fraction", 0.875)))
