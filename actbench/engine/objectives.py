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

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from actbench.engine import augment
from actbench.errors import ConfigError

LOSSES = ("softmax_cross_entropy", "sigmoid_binary_cross_entropy")

Loss = Callable[[jax.Array, jax.Array], jax.Array]  # (logits, targets) -> per-example loss


def check(cfg) -> None:
  """Raises ConfigError naming the config.train field that is out of range."""
  loss = cfg.loss
  if loss not in LOSSES:
    raise ConfigError(f"config.train.loss must be one of {LOSSES}, got {loss!r}")
  ranges = {"label_smoothing": (0.0, 1.0), "target_threshold": (0.0, 1.0),
            "mixup_alpha": (0.0, None), "cutmix_alpha": (0.0, None),
            "mixup_switch_prob": (0.0, 1.0), "randaugment_magnitude": (0.0, 30.0),
            "randaugment_layers": (0, None)}
  for name, (low, high) in ranges.items():
    value = cfg[name]
    if value < low or (high is not None and value > high):
      bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
      raise ConfigError(f"config.train.{name} must be {bound}, got {value!r}")
  scale = float(cfg.crop_min_scale)
  if not 0.0 < scale <= 1.0:
    raise ConfigError(f"config.train.crop_min_scale must be in (0, 1], got {scale!r}")
  fraction = float(cfg.eval_crop_fraction)
  if not 0.0 < fraction <= 1.0:
    raise ConfigError(f"config.train.eval_crop_fraction must be in (0, 1], got {fraction!r}")


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
  return _loss(cfg.loss, float(cfg.label_smoothing), float(cfg.target_threshold))


def evaluation_loss(cfg) -> Loss:
  """The per-example loss reported on evaluation splits: the training loss on one-hot targets,
  without label smoothing (thresholding leaves one-hot targets as they are)."""
  return _loss(cfg.loss, 0.0, 0.0)


def mixes(cfg) -> bool:
  return cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0


def training_batch(cfg, dataset, key: jax.Array, images: jax.Array,
                   labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One step's raw host batch -> (network inputs, float targets (B, num_classes)).

  `key` decides every random choice of the step (same key: same batch)."""
  augment_images = bool(cfg.augment)
  inputs = dataset.preprocess(
      images, key=key, train=augment_images,
      crop_min_scale=float(cfg.crop_min_scale),
      randaugment=(int(cfg.randaugment_layers), float(cfg.randaugment_magnitude)))
  targets = augment.one_hot_targets(labels, dataset.info.num_classes)
  if augment_images and mixes(cfg):
    inputs, targets = augment.mixup_cutmix(
        jax.random.fold_in(key, 3), inputs, targets,
        mixup_alpha=float(cfg.mixup_alpha), cutmix_alpha=float(cfg.cutmix_alpha),
        switch_prob=float(cfg.mixup_switch_prob))
  return inputs, targets


def evaluation_inputs(cfg, dataset, images: jax.Array) -> jax.Array:
  """A host batch -> network inputs for evaluation (ImageNet-like data: the centre crop)."""
  return dataset.preprocess(images, train=False,
                            crop_fraction=float(cfg.eval_crop_fraction))
