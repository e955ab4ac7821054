"""Device-side image transforms: pure, jittable, one PRNG key per batch split into one per
example. `data.Dataset.preprocess` composes them; RandAugment and mixing are in augment.py.

Jitted with their shape arguments static, so eager calls (Colab) are fast too; inside a jitted
training step they are simply inlined.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from actbench.engine import augment

RESIZE_RATIO = 0.875  # host images are stored at image_size / 0.875 (256 for 224)


def to_unit_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]; float inputs are used as they are (images in [0, 1])."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """(x - mean) / std per channel, in float32; uint8 images are first scaled to [0, 1]."""
  return (to_unit_float(images) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _per_example(fn: Callable, key: jax.Array, images: jax.Array) -> jax.Array:
  return jax.vmap(fn)(jax.random.split(key, images.shape[0]), images)


@jax.jit
def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Mirrors each image left-right with probability 1/2. (B, H, W, C), dtype kept."""
  def one(k, image):
    return jnp.where(jax.random.bernoulli(k), image[:, ::-1], image)
  return _per_example(one, key, images)


@functools.partial(jax.jit, static_argnames=('padding', 'mode'))
def pad_crop_flip(key: jax.Array, images: jax.Array, *, padding: int = 4,
                  mode: str = 'constant') -> jax.Array:
  """CIFAR augmentation: pad each side by `padding` (zeros; mode='reflect' mirrors instead),
  take a random crop of the original size, mirror with probability 1/2. Shape, dtype kept."""
  height, width, channels = images.shape[1:]

  def one(k, image):
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode=mode)
    u = jax.random.uniform(k, (3,))  # one draw per example: offsets and flip
    y, x = augment.uniform_int(u[0], 2 * padding + 1), augment.uniform_int(u[1], 2 * padding + 1)
    crop = jax.lax.dynamic_slice(padded, (y, x, 0), (height, width, channels))
    return jnp.where(u[2] < 0.5, crop[:, ::-1], crop)
  return _per_example(one, key, images)


def _resample_weights(in_size: int, out_size: int, start: jax.Array,
                      length: jax.Array) -> jax.Array:
  """(out_size, in_size) weights resizing pixels [start, start + length) of a row to out_size
  pixels: triangle (bilinear) kernel, widened when shrinking (antialiasing), pixels outside
  the box excluded, rows summing to 1 (as jax.image.resize does on the cropped row). As
  matrices, crop-and-resize is two small matmuls, and compiles quickly."""
  step = length / out_size
  centres = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * step
  pixels = jnp.arange(in_size, dtype=jnp.float32)
  distance = jnp.abs(pixels[None, :] + 0.5 - centres[:, None])
  inside = (pixels >= start) & (pixels < start + length)
  weights = jnp.where(inside, jnp.maximum(0.0, 1.0 - distance / jnp.maximum(step, 1.0)), 0.0)
  return weights / jnp.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


def _crop_resize(image: jax.Array, box: tuple, size: int) -> jax.Array:
  """The box (top, left, height, width) of one (H, W, C) image resized to (size, size, C)."""
  top, left, h, w = (jnp.asarray(v, jnp.float32) for v in box)
  rows = _resample_weights(image.shape[0], size, top, h)
  cols = _resample_weights(image.shape[1], size, left, w)
  return jnp.einsum('oh,hwc,pw->opc', rows, image.astype(jnp.float32), cols,
                    precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=('size', 'scale', 'ratio', 'attempts'))
def random_resized_crop(key: jax.Array, images: jax.Array, *, size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        attempts: int = 10) -> jax.Array:
  """Inception-style crop: a box of area fraction ~U(scale) and aspect ratio log-uniform in
  `ratio` (first of `attempts` draws that fits, else the whole image), resized (bilinear,
  antialiased) to size x size. Returns float32 (B, size, size, C) in the input's value range.
  `scale` and `ratio` must be tuples (static arguments)."""
  height, width = images.shape[1:3]

  def one(k, image):
    u = jax.random.uniform(k, (2 * attempts + 2,))  # one draw per example (compiles faster)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:attempts])
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = jnp.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[attempts:2 * attempts])
    w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
    first = jnp.argmax(fits)
    h = jnp.where(fits.any(), h[first], height)
    w = jnp.where(fits.any(), w[first], width)
    y, x = augment.uniform_int(u[-2], height - h + 1), augment.uniform_int(u[-1], width - w + 1)
    return _crop_resize(image, (y, x, h, w), size)
  return _per_example(one, key, images)


@functools.partial(jax.jit, static_argnames=('size', 'crop_fraction'))
def center_crop(images: jax.Array, *, size: int, crop_fraction: float = RESIZE_RATIO) -> jax.Array:
  """The central square covering `crop_fraction` of the shorter side, resized to size x size
  (bilinear, antialiased). float32."""
  height, width = images.shape[1:3]
  side = round(crop_fraction * min(height, width))
  box = ((height - side) // 2, (width - side) // 2, side, side)
  return jax.vmap(lambda image: _crop_resize(image, box, size))(jnp.asarray(images))
