"""Batch augmentations for training, on the device: RandAugment, mixup / CutMix, BCE targets.

Every function is pure and jittable, and works on float images in [0, 1] of shape (B, H, W, C)
(C = 1 or 3), the output of `data.Dataset.preprocess`'s augmentation before normalization. As in
data.py, one PRNG key per batch is split into one key per example.

    from actbench.engine import augment
    x = augment.rand_augment(key_a, x, num_layers=2, magnitude=9.0)
    y = augment.one_hot_targets(labels, num_classes, smoothing=0.1)
    x, y = augment.mixup_cutmix(key_m, x, y, mixup_alpha=0.8, cutmix_alpha=1.0)
    y_bce = augment.threshold_targets(y, 0.2)          # DeiT-III / timm BCE recipe

RandAugment (Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced
search space", CVPR-W 2020) applies `num_layers` ops drawn uniformly from `OPS`, each at one
global magnitude m on the 0..10 scale of AutoAugment (Cubuk et al., CVPR 2019). The ops follow
the PIL definitions the papers used; m maps to:

    Rotate        +-30 * m/10 degrees, counter-clockwise for sign +1, about the image centre
    ShearX/Y      +-0.3 * m/10; x_in = x + s*y (ShearY: y_in = y + s*x), about the top-left
                  corner as PIL's affine transform does
    TranslateX/Y  +-0.45 * m/10 of the image side (0.45 = AutoAugment's 150 px of 331, timm's
                  translate_pct); content moves right/down by that many pixels for sign +1
    Solarize      threshold 256 * (1 - m/10) on the 0..255 scale: pixels >= it are inverted
    Posterize     keep 8 - floor(4 * m/10) bits (8 -> 4 bits over 0..10)
    Color, Contrast, Brightness, Sharpness: PIL ImageEnhance blend with factor 1 +- 0.9 * m/10
    Identity, AutoContrast, Equalize: no magnitude

Magnitudes above 10 extrapolate linearly (bits clipped to [0, 8], factors to >= 0). Geometric
ops sample bilinearly and fill with `fill` (0.5 gray) outside the image. Solarize, Posterize and
Equalize decide on the image quantized to 256 levels, as PIL does on uint8.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax


def uniform_int(u: jax.Array, n) -> jax.Array:
  """u ~ U[0, 1) -> an integer uniform in [0, n)."""
  return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)


OPS = ('Identity', 'AutoContrast', 'Equalize', 'Rotate', 'Solarize', 'Color', 'Posterize',
       'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')
(IDENTITY, AUTO_CONTRAST, EQUALIZE, ROTATE, SOLARIZE, COLOR, POSTERIZE, CONTRAST, BRIGHTNESS,
 SHARPNESS, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y) = range(len(OPS))

_MAX_LEVEL = 10.0
_ROTATE_DEGREES = 30.0
_SHEAR = 0.3
_TRANSLATE = 0.45
_ENHANCE = 0.9
_LUMA = (0.299, 0.587, 0.114)  # PIL's RGB -> L (ITU-R 601-2)

# ---------------------------------------------------------------- the ops, on one (H, W, C) image
# Each takes (image, op, magnitude, sign, fill) so that one lax.switch can dispatch them.


def _quantize(image: jax.Array) -> jax.Array:
  return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0).astype(jnp.int32)


def _identity(image, op, m, sign, fill):
  del op, m, sign, fill
  return image


def _auto_contrast(image, op, m, sign, fill):
  """Stretches each channel's [min, max] to [0, 1] (PIL ImageOps.autocontrast, cutoff 0); a
  constant channel is left as it is."""
  del op, m, sign, fill
  lo, hi = image.min(axis=(0, 1)), image.max(axis=(0, 1))
  return jnp.where(hi > lo, (image - lo) / jnp.where(hi > lo, hi - lo, 1.0), image)


def _equalize(image, op, m, sign, fill):
  """Per-channel histogram equalization over 256 bins, PIL ImageOps.equalize's lookup table:
  lut[i] = (step // 2 + #pixels below bin i) // step, step = (#pixels - #pixels in the highest
  occupied bin) // 255; step 0 (nearly constant channel) leaves the channel unchanged."""
  del op, m, sign, fill
  height, width, channels = image.shape
  # Flat bin ids channel * 256 + level: one scatter-add histogram for all channels, O(pixels)
  # where a one-hot comparison would be O(pixels * 256), and one gather to apply the tables.
  bins = (_quantize(image) + 256 * jnp.arange(channels)).reshape(-1)
  hist = jnp.bincount(bins, length=256 * channels).reshape(channels, 256)
  top = 255 - jnp.argmax(hist[:, ::-1] > 0, axis=1)
  step = (height * width - hist[jnp.arange(channels), top]) // 255
  below = jnp.cumsum(hist, axis=1) - hist
  lut = jnp.minimum((step[:, None] // 2 + below) // jnp.maximum(step, 1)[:, None], 255)
  lut = jnp.where(step[:, None] > 0, lut, jnp.arange(256))
  return (lut.reshape(-1).astype(jnp.float32) / 255.0)[bins].reshape(image.shape)


def _solarize(image, op, m, sign, fill):
  del op, sign, fill
  threshold = 256.0 * (1.0 - m / _MAX_LEVEL)
  return jnp.where(_quantize(image) >= threshold, 1.0 - image, image)


def _posterize(image, op, m, sign, fill):
  del op, sign, fill
  bits = jnp.clip(8 - jnp.floor(m * 4.0 / _MAX_LEVEL), 0, 8).astype(jnp.int32)
  shift = 8 - bits
  kept = jnp.left_shift(jnp.right_shift(_quantize(image), shift), shift)
  # 8 bits keeps the float image itself, so that magnitude 0 is exactly the identity.
  return jnp.where(shift > 0, kept.astype(jnp.float32) / 255.0, image)


def _gray(image: jax.Array) -> jax.Array:
  """(H, W, 1) luma."""
  if image.shape[-1] == 3:
    return jnp.tensordot(image, jnp.asarray(_LUMA, image.dtype), axes=1)[..., None]
  return image.mean(axis=-1, keepdims=True)


def _smooth(image: jax.Array) -> jax.Array:
  """PIL's ImageFilter.SMOOTH ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13); PIL leaves the
  one-pixel border unfiltered, and so does this."""
  height, width = image.shape[:2]
  if height < 3 or width < 3:
    return image
  inner = 4.0 * image[1:-1, 1:-1]
  for dy in range(3):
    for dx in range(3):
      inner = inner + image[dy:height - 2 + dy, dx:width - 2 + dx]
  return image.at[1:-1, 1:-1].set(inner / 13.0)


def _enhance(image, op, m, sign, fill):
  """PIL ImageEnhance: blend (1 - f) * degenerate + f * image, where the degenerate image is
  the grayscale image (Color), its mean gray (Contrast), black (Brightness) or the smoothed
  image (Sharpness)."""
  del fill
  factor = jnp.maximum(1.0 + sign * _ENHANCE * m / _MAX_LEVEL, 0.0)
  gray = _gray(image)
  degenerate = jnp.select(
      [op == COLOR, op == CONTRAST, op == SHARPNESS],
      [jnp.broadcast_to(gray, image.shape), jnp.broadcast_to(gray.mean(), image.shape),
       _smooth(image)], 0.0)
  # This form (not degenerate + f * (image - degenerate)) is exact at f = 1.
  return (1.0 - factor) * degenerate + factor * image


def _affine(op, m, sign, height: int, width: int) -> jax.Array:
  """(2, 3) matrix taking an output point (x, y, 1) to the input point sampled there, in
  continuous coordinates (pixel (i, j) covers [j, j + 1) x [i, i + 1))."""
  theta = jnp.deg2rad(sign * _ROTATE_DEGREES * m / _MAX_LEVEL)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  cx, cy = width / 2.0, height / 2.0
  shear = sign * _SHEAR * m / _MAX_LEVEL
  shift = sign * _TRANSLATE * m / _MAX_LEVEL
  one, zero = jnp.ones_like(cos), jnp.zeros_like(cos)
  rows = jnp.select(
      [op == ROTATE, op == SHEAR_X, op == SHEAR_Y, op == TRANSLATE_X, op == TRANSLATE_Y],
      [jnp.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy]),
       jnp.stack([one, shear, zero, zero, one, zero]),
       jnp.stack([one, zero, zero, shear, one, zero]),
       jnp.stack([one, zero, -shift * width, zero, one, zero]),
       jnp.stack([one, zero, zero, zero, one, -shift * height])],
      jnp.stack([one, zero, zero, zero, one, zero]))
  return rows.reshape(2, 3)


def _warp(image, op, m, sign, fill):
  """Rotate / Shear / Translate: bilinear sampling of the affine map, `fill` outside. Four
  gathers from the image padded with one ring of fill, whatever the op."""
  height, width, channels = image.shape
  (a, b, c), (d, e, f) = _affine(op, m, sign, height, width)
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) + 0.5,
                        jnp.arange(width, dtype=jnp.float32) + 0.5, indexing='ij')
  x_in, y_in = a * xs + b * ys + c - 0.5, d * xs + e * ys + f - 0.5  # pixel-centre indices
  x0, y0 = jnp.floor(x_in), jnp.floor(y_in)
  wx, wy = (x_in - x0)[..., None], (y_in - y0)[..., None]
  padded = jnp.pad(image, ((1, 1), (1, 1), (0, 0)), constant_values=fill)
  padded = padded.reshape(-1, channels)

  def at(y, x):  # anything outside the image lands on the fill ring
    y = jnp.clip(y, -1, height).astype(jnp.int32) + 1
    x = jnp.clip(x, -1, width).astype(jnp.int32) + 1
    return padded[y * (width + 2) + x]

  top = (1.0 - wx) * at(y0, x0) + wx * at(y0, x0 + 1)
  bottom = (1.0 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1)
  return (1.0 - wy) * top + wy * bottom


_BRANCHES = (_identity, _auto_contrast, _equalize, _solarize, _posterize, _enhance, _warp)
_BRANCH_OF_OP = (0, 1, 2, 6, 3, 5, 4, 5, 5, 5, 6, 6, 6, 6)  # OPS -> _BRANCHES


def _apply_one(image, op, m, sign, fill):
  branch = jnp.asarray(_BRANCH_OF_OP, jnp.int32)[op]
  out = jax.lax.switch(branch, _BRANCHES, image, op, m, sign, fill)
  return jnp.clip(out, 0.0, 1.0)  # as PIL saturates to uint8 after every op


def _apply_batch(images, ops, magnitudes, signs, fill):
  # Under vmap the switch evaluates every branch and selects; grouping the 14 ops into 7
  # branches (one warp for all geometric ops, one blend for the enhance ops) halves that.
  return jax.vmap(_apply_one, in_axes=(0, 0, 0, 0, None))(images, ops, magnitudes, signs, fill)


def _check_float(images: jax.Array) -> None:
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(f'augment expects float images in [0, 1], got dtype {images.dtype}')


@jax.jit
def _apply_ops_jit(images, ops, magnitudes, signs, fill):
  return _apply_batch(images.astype(jnp.float32), ops, magnitudes, signs, fill
                      ).astype(images.dtype)


def apply_op(images: jax.Array, op, magnitude=6.0, sign=1.0, *, fill: float = 0.5) -> jax.Array:
  """Applies one RandAugment op per image, deterministically: `op` is a name of OPS, an index
  into OPS, or a (B,) sequence / array of either; `magnitude` (0..10 scale) and `sign` (+1 or
  -1, for the signed ops) are scalars or (B,). Float (B, H, W, C) in [0, 1] -> same shape and
  dtype, clipped to [0, 1]. The building block of `rand_augment`, exposed for tests and for
  fixed policies."""
  images = jnp.asarray(images)
  _check_float(images)
  batch = images.shape[0]
  if isinstance(op, str) or (isinstance(op, Sequence) and op and isinstance(op[0], str)):
    op = [OPS.index(o) for o in ([op] if isinstance(op, str) else op)]
  ops = jnp.broadcast_to(jnp.asarray(op, jnp.int32), (batch,))
  magnitudes = jnp.broadcast_to(jnp.asarray(magnitude, jnp.float32), (batch,))
  signs = jnp.broadcast_to(jnp.asarray(sign, jnp.float32), (batch,))
  return _apply_ops_jit(images, ops, magnitudes, signs, jnp.float32(fill))


def _floats(*values) -> tuple[jax.Array, ...]:
  return tuple(jnp.asarray(v, jnp.float32) for v in values)


def _op_names(ops: Sequence[str]) -> tuple[str, ...]:
  ops = (ops,) if isinstance(ops, str) else tuple(ops)
  unknown = [o for o in ops if o not in OPS]
  if not ops or unknown:
    raise ValueError(f'ops must be a non-empty subset of {OPS}, got {ops!r}')
  return ops


def sample_policy(key: jax.Array, batch_size: int, *, num_layers: int = 2,
                  magnitude: float = 6.0, magnitude_std: float = 0.0, prob: float = 1.0,
                  ops: Sequence[str] = OPS) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The random choices `rand_augment(key, ...)` makes: op indices into OPS, magnitudes and
  signs, each (batch_size, num_layers). Ops are uniform over `ops`; with probability 1 - prob
  a layer is Identity instead (timm's per-op probability; the paper uses 1); with
  magnitude_std > 0 each magnitude is N(magnitude, std) clipped to [0, max(10, magnitude)]
  (timm's 'mstd')."""
  return _sample_policy(key, batch_size, num_layers, _op_names(ops),
                        *_floats(magnitude, magnitude_std, prob))


# The public functions take keywords and convert them; these jitted cores take everything
# positionally, so one program serves every combination of keywords passed (a jitted function
# traces again for each set of keyword names and Python scalar types).
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample_policy(key, batch_size, num_layers, ops, magnitude, magnitude_std, prob):
  table = jnp.asarray([OPS.index(o) for o in ops], jnp.int32)

  def one(k):
    u = jax.random.uniform(k, (num_layers, 5))  # one draw per example: op, sign, prob, 2 for z
    # Box-Muller: a normal from two uniforms compiles faster than jax.random.normal.
    z = jnp.sqrt(-2.0 * jnp.log1p(-u[:, 3])) * jnp.cos(2.0 * jnp.pi * u[:, 4])
    op = jnp.where(u[:, 2] < prob, table[uniform_int(u[:, 0], len(ops))], IDENTITY)
    m = jnp.clip(magnitude + magnitude_std * z, 0.0, jnp.maximum(_MAX_LEVEL, magnitude))
    m = jnp.where(magnitude_std > 0, m, magnitude)
    return op, m.astype(jnp.float32), jnp.where(u[:, 1] < 0.5, -1.0, 1.0).astype(jnp.float32)

  return jax.vmap(one)(jax.random.split(key, batch_size))


def rand_augment(key: jax.Array, images: jax.Array, *, num_layers: int = 2,
                 magnitude: float = 6.0, magnitude_std: float = 0.0, prob: float = 1.0,
                 ops: Sequence[str] = OPS, fill: float = 0.5) -> jax.Array:
  """RandAugment (Cubuk et al. 2020): each image independently gets `num_layers` ops in a row,
  each drawn uniformly from `ops` (default all 14 of OPS) with a random sign, at `magnitude`
  (0..10; see the module docstring for what it means per op). magnitude_std and prob as in
  `sample_policy`. Float (B, H, W, C) in [0, 1] -> same shape and dtype, clipped to [0, 1].
  `num_layers` and `ops` are static (a new program each); magnitude, magnitude_std, prob and
  fill may be traced."""
  images = jnp.asarray(images)
  _check_float(images)
  if num_layers < 0:
    raise ValueError(f'num_layers must be >= 0, got {num_layers}')
  return _rand_augment(key, images, num_layers, _op_names(ops),
                       *_floats(magnitude, magnitude_std, prob, fill))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _rand_augment(key, images, num_layers, ops, magnitude, magnitude_std, prob, fill):
  op, m, sign = _sample_policy(key, images.shape[0], num_layers, ops, magnitude, magnitude_std,
                               prob)

  def layer(x, choice):
    return _apply_batch(x, *choice, fill), None

  # A scan compiles the (large, every-branch) layer once, however many layers there are.
  x, _ = jax.lax.scan(layer, images.astype(jnp.float32), (op.T, m.T, sign.T))
  return x.astype(images.dtype)


# ---------------------------------------------------------------- mixup / CutMix and targets


def mixup_cutmix(key: jax.Array, images: jax.Array, targets: jax.Array, *,
                 mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, switch_prob: float = 0.5,
                 prob: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Batch-mode mixup (Zhang et al., "mixup: Beyond empirical risk minimization", ICLR 2018)
  or CutMix (Yun et al., "CutMix: Regularization strategy to train strong classifiers with
  localizable features", ICCV 2019), as in the DeiT / timm recipe.

  With probability `prob` the whole batch is mixed with its reverse (example i with example
  B - 1 - i) at one lambda ~ Beta(alpha, alpha). If both alphas are > 0, CutMix is chosen with
  probability `switch_prob`, else the one whose alpha is > 0; both 0 returns the inputs.
  Mixup: lambda * x + (1 - lambda) * partner. CutMix: a box of area fraction 1 - lambda (side
  fractions sqrt(1 - lambda), centre uniform over the image, clipped to it) is pasted from the
  partner, and lambda is corrected to the pasted area. Targets (B, num_classes), one-hot or
  soft, become lambda * t + (1 - lambda) * partner's t, so lambda can be read off them.

  The alphas and probabilities may be traced; changing them does not recompile. Returns
  (images: same shape and dtype, targets: float32). An odd batch's middle example is its own
  partner."""
  images = jnp.asarray(images)
  _check_float(images)
  return _mixup_cutmix(key, images, targets,
                       *_floats(mixup_alpha, cutmix_alpha, switch_prob, prob))


@jax.jit
def _mixup_cutmix(key, images, targets, mixup_alpha, cutmix_alpha, switch_prob, prob):
  height, width = images.shape[1:3]
  x = images.astype(jnp.float32)
  t = jnp.asarray(targets, jnp.float32)
  lam_key, key = jax.random.split(key)
  u = jax.random.uniform(key, (4,))
  mixup_on, cutmix_on = mixup_alpha > 0, cutmix_alpha > 0
  active = (u[0] < prob) & (mixup_on | cutmix_on)
  use_cutmix = jnp.where(mixup_on & cutmix_on, u[1] < switch_prob, cutmix_on)
  alpha = jnp.where(use_cutmix, cutmix_alpha, mixup_alpha)
  alpha = jnp.where(alpha > 0, alpha, 1.0)  # Beta(0, 0) is undefined; unused then anyway
  # Beta(a, a) = G1 / (G1 + G2) = sigmoid(log G1 - log G2): log-space, so small alphas (whose
  # gammas underflow) stay finite, and one gamma sampler (slow to compile) instead of two.
  log_gammas = jax.random.loggamma(lam_key, alpha, (2,), jnp.float32)
  lam = jax.nn.sigmoid(log_gammas[0] - log_gammas[1])

  # CutMix box: side fractions sqrt(1 - lambda), so the unclipped area is 1 - lambda.
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  top = uniform_int(u[2], height) - cut_h // 2
  left = uniform_int(u[3], width) - cut_w // 2
  y0, y1 = jnp.clip(top, 0, height), jnp.clip(top + cut_h, 0, height)
  x0, x1 = jnp.clip(left, 0, width), jnp.clip(left + cut_w, 0, width)
  rows, cols = jnp.arange(height), jnp.arange(width)
  box = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
  lam_cut = 1.0 - ((y1 - y0) * (x1 - x0)).astype(jnp.float32) / (height * width)

  partner = x[::-1]
  mixed = jnp.where(use_cutmix, jnp.where(box[None, :, :, None], partner, x),
                    lam * x + (1.0 - lam) * partner)
  lam = jnp.where(use_cutmix, lam_cut, lam)
  mixed_t = lam * t + (1.0 - lam) * t[::-1]
  # jnp.where, not lambda = 1: inactive batches come back bit for bit.
  return jnp.where(active, mixed, x).astype(images.dtype), jnp.where(active, mixed_t, t)


def one_hot_targets(labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
  """(B,) int labels -> (B, num_classes) float32 targets, with label smoothing (Szegedy et al.
  2016) as timm does it: 1 - smoothing + smoothing / num_classes on the label,
  smoothing / num_classes elsewhere."""
  return optax.smooth_labels(jax.nn.one_hot(labels, num_classes, dtype=jnp.float32), smoothing)


def threshold_targets(targets: jax.Array, threshold: float) -> jax.Array:
  """(targets > threshold) as float32: the binary cross-entropy targets of DeiT III (Touvron et
  al., "DeiT III: Revenge of the ViT", ECCV 2022) and timm's BinaryCrossEntropy
  target_threshold (0.2), which after mixup / CutMix marks every class present in a mixed
  image (with weight > threshold) as positive. threshold <= 0 returns the targets as they are
  (as float32). Jittable; `threshold` may be traced."""
  targets = jnp.asarray(targets, jnp.float32)
  if isinstance(threshold, (int, float)):
    return (targets > threshold).astype(jnp.float32) if threshold > 0 else targets
  return jnp.where(threshold > 0, (targets > threshold).astype(jnp.float32), targets)
