"""Tests for actbench.engine.augment: each RandAugment op's defining behaviour (and PIL's, where PIL
defines it on uint8), the random policy, mixup / CutMix, and the BCE targets.

Compiles are the cost here, so every op test goes through one program: `apply_op` on a batch of
N images of S x S x 3 (`_apply` pads the batch), and `rand_augment` runs on that shape too.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from actbench.engine import augment
from actbench.engine.augment import OPS

N, S = 14, 32  # the one apply_op / rand_augment shape: (N, S, S, 3)
RNG = np.random.default_rng(0)


def _apply(images, op, magnitude=0.0, sign=1.0):
  """apply_op on the first len(images) of an (N, S, S, 3) batch: one compiled program."""
  images = np.asarray(images, np.float32)
  k = len(images)
  pad = lambda v, filler: (list(v) + [filler] * (N - k)) if np.ndim(v) else v
  batch = np.concatenate([images, np.zeros((N - k, S, S, 3), np.float32)])
  out = augment.apply_op(batch, pad(op, 'Identity') if not isinstance(op, str) else op,
                         pad(magnitude, 0.0), pad(sign, 1.0))
  assert out.shape == batch.shape and out.dtype == jnp.float32
  return np.asarray(out[:k])


def _random_images(k, quantized=False, low=0.0, high=1.0):
  x = RNG.uniform(low, high, size=(k, S, S, 3)).astype(np.float32)
  return (np.round(x * 255) / 255).astype(np.float32) if quantized else x


def _uint8(images):
  return np.round(np.asarray(images) * 255).astype(np.uint8)


def _pil(fn, images):
  """fn applied by PIL to each uint8 RGB image; back to float [0, 1]."""
  return np.stack([np.asarray(fn(Image.fromarray(u))) for u in _uint8(images)]) / 255.0


# ---------------------------------------------------------------- single ops


def test_magnitude_zero_is_the_identity_for_every_op_with_a_magnitude():
  x = _random_images(N)  # not quantized: Posterize / Solarize must still leave it bit for bit
  signs = [1.0 if i % 2 else -1.0 for i in range(N)]
  out = _apply(x, list(OPS), 0.0, signs)
  for i, name in enumerate(OPS):
    if name not in ('AutoContrast', 'Equalize'):  # these have no magnitude
      np.testing.assert_array_equal(out[i], x[i], err_msg=name)
  np.testing.assert_array_equal(_apply(x[:3], 'Identity', 10.0, -1.0), x[:3])


def test_values_stay_in_the_unit_interval_at_large_magnitudes():
  x = np.concatenate([_random_images(7), RNG.integers(0, 2, (7, S, S, 3)).astype(np.float32)])
  for magnitude in (10.0, 30.0):
    for sign in (1.0, -1.0):
      out = _apply(x, list(OPS), magnitude, sign)
      assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_auto_contrast_maps_each_channel_min_and_max_to_0_and_1():
  ramp = np.linspace(0, 1, S * S).reshape(S, S)
  image = np.stack([0.2 + 0.4 * ramp, 0.1 + 0.8 * ramp, np.full((S, S), 0.5)], -1)
  out = _apply(image[None], 'AutoContrast')[0]
  np.testing.assert_allclose(out[..., 0], ramp, atol=1e-6)
  np.testing.assert_allclose(out[..., 1], ramp, atol=1e-6)
  np.testing.assert_array_equal(out[..., 2], image[..., 2])  # a constant channel is kept
  # PIL truncates its lookup table to integers: within one level below ours.
  x = _random_images(3, quantized=True, low=0.2, high=0.8)
  diff = _apply(x, 'AutoContrast') - _pil(ImageOps.autocontrast, x)
  assert diff.min() > -1e-5 and diff.max() < 1.0 / 255 + 1e-5


def test_equalize_matches_pil_and_makes_a_two_level_image_black_and_white():
  x = np.round(_random_images(4) ** 3 * 150 + 40) / 255  # skewed histograms
  np.testing.assert_allclose(_apply(x, 'Equalize'), _pil(ImageOps.equalize, x), atol=1e-6)
  two = np.full((S, S, 3), 0.3, np.float32)
  two[S // 2:] = 0.6
  constant = np.full((S, S, 3), 0.4, np.float32)
  out = _apply(np.stack([two, constant]), 'Equalize')
  np.testing.assert_array_equal(out[0, :S // 2], 0.0)
  np.testing.assert_array_equal(out[0, S // 2:], 1.0)
  np.testing.assert_allclose(out[1], constant, atol=1e-6)  # one level: nothing to equalize


def test_equalize_flattens_the_histogram_of_a_skewed_ramp():
  side = 128  # large enough for PIL's integer step to be accurate
  ramp = np.linspace(0, 1, side * side).reshape(side, side, 1) ** 3  # mostly dark
  equalize = jax.jit(functools.partial(augment._equalize, op=None, m=None, sign=None, fill=None))
  out = np.asarray(equalize(jnp.asarray(ramp, jnp.float32)))
  levels = np.linspace(0, 1, 11)
  cdf = (out.reshape(-1)[:, None] <= levels + 1e-6).mean(axis=0)
  np.testing.assert_allclose(cdf[1:], levels[1:], atol=0.03)  # uniform: cdf(v) = v


def test_solarize_inverts_the_pixels_at_or_above_the_threshold():
  x = _random_images(3, quantized=True)
  out = _apply(x, 'Solarize', 5.0)  # threshold 128 of 255
  above = _uint8(x) >= 128
  np.testing.assert_allclose(out, np.where(above, 1 - x, x), atol=1e-6)
  np.testing.assert_allclose(out, _pil(lambda im: ImageOps.solarize(im, 128), x), atol=1e-6)
  np.testing.assert_allclose(_apply(x, 'Solarize', 10.0), 1 - x, atol=1e-6)  # threshold 0


@pytest.mark.parametrize('magnitude, bits', [(10.0, 4), (5.0, 6), (2.4, 8)])
def test_posterize_keeps_the_top_bits(magnitude, bits):
  x = _random_images(3, quantized=True)
  expected = _pil(lambda im: ImageOps.posterize(im, bits), x)
  np.testing.assert_allclose(_apply(x, 'Posterize', magnitude), expected, atol=1e-6)
  if bits < 8:
    assert (_uint8(_apply(x, 'Posterize', magnitude)) % 2 ** (8 - bits) == 0).all()


@pytest.mark.parametrize('name', ['Color', 'Contrast', 'Brightness', 'Sharpness'])
def test_enhance_ops_match_pil(name):
  x = _random_images(2, quantized=True, low=0.25, high=0.75)
  for sign in (1.0, -1.0):
    factor = 1 + sign * 0.9 * 0.5  # magnitude 5
    expected = _pil(lambda im, factor=factor: getattr(ImageEnhance, name)(im).enhance(factor), x)
    np.testing.assert_allclose(_apply(x, name, 5.0, sign), expected, atol=2.01 / 255)


def test_brightness_color_contrast_defining_cases():
  x = _random_images(3)
  np.testing.assert_allclose(_apply(x, 'Brightness', 10.0, -1.0), 0.1 * x, atol=1e-6)
  gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
  out = _apply(x, 'Color', 10.0, -1.0)  # factor 0.1: nearly grayscale
  np.testing.assert_allclose(out, 0.9 * gray[..., None] + 0.1 * x, atol=1e-5)
  out = _apply(x, 'Contrast', 10.0, -1.0)
  mean = gray.mean(axis=(1, 2))[:, None, None, None]
  np.testing.assert_allclose(out, 0.9 * mean + 0.1 * x, atol=1e-5)


def test_rotate_by_90_degrees_matches_rot90():
  x = _random_images(2)
  out = _apply(x, 'Rotate', 30.0, [1.0, -1.0])  # magnitude 30: 90 degrees
  expected = np.stack([np.rot90(x[0]), np.rot90(x[1], k=-1)])
  np.testing.assert_allclose(out[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-5)
  np.testing.assert_allclose(out, expected, atol=1e-4)
  quarter = _apply(x[:1], 'Rotate', 15.0)[0]  # 45 degrees: the corners are gray fill
  np.testing.assert_allclose(quarter[[0, 0, -1, -1], [0, -1, 0, -1]], 0.5, atol=1e-6)


def test_translate_shifts_by_the_expected_pixels_with_gray_fill():
  x = _random_images(2)
  magnitude = 10 * 8 / (0.45 * S)  # 8 pixels
  right = _apply(x, 'TranslateX', magnitude, 1.0)
  np.testing.assert_allclose(right[:, :, 8:], x[:, :, :-8], atol=1e-5)
  np.testing.assert_allclose(right[:, :, :8], 0.5, atol=1e-5)
  up = _apply(x, 'TranslateY', magnitude, -1.0)
  np.testing.assert_allclose(up[:, :-8], x[:, 8:], atol=1e-5)
  np.testing.assert_allclose(up[:, -8:], 0.5, atol=1e-5)


@pytest.mark.parametrize('name', ['ShearX', 'ShearY'])
@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_shear_moves_each_row_by_shear_times_its_height(name, sign):
  # A linear ramp along the sheared axis: bilinear sampling reproduces it exactly, so every
  # output pixel shows where it was sampled from.
  i = np.arange(S, dtype=np.float32)
  ramp = np.broadcast_to((0.2 + 0.02 * i)[None, :, None], (S, S, 3))  # along x
  if name == 'ShearY':
    ramp = ramp.transpose(1, 0, 2)
  out = _apply(ramp[None], name, 5.0, sign)[0]
  if name == 'ShearY':
    out = out.transpose(1, 0, 2)  # now rows of out are the sheared lines
  source = i[None, :] + sign * 0.15 * (i[:, None] + 0.5)  # x_in = x + s * y (pixel indices)
  inside = (source >= 0) & (source <= S - 1)
  outside = (source <= -1) | (source >= S)
  np.testing.assert_allclose(out[..., 0][inside], (0.2 + 0.02 * source)[inside], atol=1e-5)
  np.testing.assert_allclose(out[..., 0][outside], 0.5, atol=1e-6)
  assert outside.sum() > S  # the bottom rows did move out


# ---------------------------------------------------------------- RandAugment


def test_rand_augment_is_deterministic_per_key_and_varies_across_keys_and_examples():
  x = jnp.asarray(np.broadcast_to(_random_images(1), (N, S, S, 3)))
  key = jax.random.key(3)
  a, b = augment.rand_augment(key, x), augment.rand_augment(key, x)
  assert a.shape == x.shape and a.dtype == x.dtype
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, augment.rand_augment(jax.random.key(4), x))
  distinct = {np.asarray(a[i]).tobytes() for i in range(N)}
  assert len(distinct) > N // 2  # each example draws its own ops
  assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_rand_augment_applies_the_sampled_policy_layer_by_layer():
  x = jnp.asarray(_random_images(N))
  key = jax.random.key(7)
  ops, magnitudes, signs = augment.sample_policy(key, N, num_layers=2, magnitude=9.0)
  np.testing.assert_array_equal(magnitudes, 9.0)
  expected = x
  for layer in range(2):
    expected = augment.apply_op(expected, ops[:, layer], magnitudes[:, layer], signs[:, layer])
  np.testing.assert_allclose(augment.rand_augment(key, x, magnitude=9.0), expected, atol=1e-6)
  np.testing.assert_array_equal(augment.rand_augment(key, x, prob=0.0), x)  # all Identity


def test_sampled_ops_are_uniform_with_random_signs():
  ops, magnitudes, signs = augment.sample_policy(jax.random.key(0), 20_000, num_layers=2)
  counts = np.bincount(np.asarray(ops).reshape(-1), minlength=len(OPS))
  expected = ops.size / len(OPS)
  assert np.abs(counts / expected - 1).max() < 0.1, counts
  assert abs(float((signs > 0).mean()) - 0.5) < 0.02
  assert set(np.unique(np.asarray(signs))) == {-1.0, 1.0}
  assert not (np.asarray(ops[:, 0]) == np.asarray(ops[:, 1])).all()  # layers are independent

  ops, _, _ = augment.sample_policy(jax.random.key(0), 20_000, num_layers=2, prob=0.5)
  identity = float((ops == OPS.index('Identity')).mean())
  assert abs(identity - (0.5 + 0.5 / len(OPS))) < 0.02
  _, magnitudes, _ = augment.sample_policy(jax.random.key(0), 20_000, num_layers=2,
                                           magnitude=9.0, magnitude_std=1.0)
  assert float(magnitudes.min()) >= 0.0 and float(magnitudes.max()) <= 10.0
  assert 0.5 < float(magnitudes.std()) < 1.0  # N(9, 1) clipped at 10


def test_sample_policy_restricted_to_some_ops():
  ops, _, _ = augment.sample_policy(jax.random.key(1), 1000, ops=('Rotate', 'Solarize'))
  assert set(np.unique(np.asarray(ops))) == {OPS.index('Rotate'), OPS.index('Solarize')}


def test_rand_augment_rejects_integer_images():
  with pytest.raises(TypeError, match='float images'):
    augment.rand_augment(jax.random.key(0), jnp.zeros((2, 4, 4, 3), jnp.uint8))


# ---------------------------------------------------------------- mixup / CutMix

B = 8


@pytest.fixture(scope='module')
def batch():
  x = jnp.asarray(RNG.uniform(size=(B, 16, 16, 3)).astype(np.float32))
  return x, augment.one_hot_targets(jnp.arange(B), B)  # partners have different classes


def _lam(targets):
  """lambda of each example, read off one-hot targets of classes 0..B-1."""
  return np.diag(np.asarray(targets))


def test_mixup_is_the_convex_combination_with_the_reversed_batch(batch):
  x, t = batch
  lams = []
  for seed in range(20):
    mixed, targets = augment.mixup_cutmix(jax.random.key(seed), x, t, mixup_alpha=1.0)
    np.testing.assert_allclose(np.asarray(targets).sum(axis=1), 1.0, atol=1e-6)
    lam = _lam(targets)
    np.testing.assert_allclose(lam, lam[0], atol=1e-7)  # one lambda per batch
    np.testing.assert_allclose(np.asarray(targets)[np.arange(B), B - 1 - np.arange(B)],
                               1 - lam, atol=1e-6)
    np.testing.assert_allclose(mixed, lam[0] * x + (1 - lam[0]) * x[::-1], atol=1e-6)
    lams.append(lam[0])
  assert 0 < min(lams) and max(lams) < 1 and np.std(lams) > 0.1  # Beta(1, 1) = U(0, 1)


def _pasted_box(mixed, x):
  """The pixels taken from the partner, checking every pixel is the original or the partner's
  and that all examples share one box."""
  mixed, x = np.asarray(mixed), np.asarray(x)
  from_partner = (mixed == x[::-1]).all(axis=-1)
  assert (from_partner | (mixed == x).all(axis=-1)).all()
  assert (from_partner == from_partner[0]).all()
  return from_partner[0]


def test_cutmix_pastes_a_rectangle_of_area_one_minus_lambda(batch):
  x, t = batch
  areas = []
  for seed in range(30):
    mixed, targets = augment.mixup_cutmix(jax.random.key(seed), x, t, cutmix_alpha=1.0)
    box = _pasted_box(mixed, x)
    lam = _lam(targets)
    np.testing.assert_allclose(lam, lam[0], atol=1e-7)
    np.testing.assert_allclose(np.asarray(targets).sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(box.mean(), 1 - lam[0], atol=1e-6)  # lambda corrected
    if box.any():  # a filled rectangle: its bounding box is all pasted
      rows, cols = np.nonzero(box.any(axis=1))[0], np.nonzero(box.any(axis=0))[0]
      assert box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
      assert box.sum() == len(rows) * len(cols)
    areas.append(box.mean())
  assert np.std(areas) > 0.05 and max(areas) > 0.3


def test_switch_prob_chooses_cutmix_or_mixup(batch):
  x, t = batch
  for seed in range(5):
    key = jax.random.key(seed)
    cut, _ = augment.mixup_cutmix(key, x, t, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0)
    _pasted_box(cut, x)
    mix, targets = augment.mixup_cutmix(key, x, t, mixup_alpha=1.0, cutmix_alpha=1.0,
                                        switch_prob=0.0)
    lam = _lam(targets)[0]
    np.testing.assert_allclose(mix, lam * x + (1 - lam) * x[::-1], atol=1e-6)


def test_mixup_cutmix_identity_cases_and_no_recompile(batch):
  x, t = batch
  smooth = augment.one_hot_targets(jnp.arange(B), B, smoothing=0.1)
  size = augment._mixup_cutmix._cache_size()
  for kwargs in (dict(), dict(mixup_alpha=0.0, cutmix_alpha=0.0),
                 dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.0)):
    mixed, targets = augment.mixup_cutmix(jax.random.key(0), x, smooth, **kwargs)
    np.testing.assert_array_equal(mixed, x)
    np.testing.assert_array_equal(targets, smooth)
  _, targets = augment.mixup_cutmix(jax.random.key(0), x, smooth, mixup_alpha=0.2)
  np.testing.assert_allclose(np.asarray(targets).sum(axis=1), 1.0, atol=1e-6)
  assert augment._mixup_cutmix._cache_size() == max(size, 1)  # one program for all kwargs


# ---------------------------------------------------------------- targets


def test_one_hot_targets_with_label_smoothing():
  np.testing.assert_array_equal(augment.one_hot_targets(jnp.array([0, 2]), 3),
                                [[1, 0, 0], [0, 0, 1]])
  smooth = np.asarray(augment.one_hot_targets(jnp.array([1]), 10, smoothing=0.1))
  np.testing.assert_allclose(smooth[0, 1], 0.91, atol=1e-6)
  np.testing.assert_allclose(smooth[0, [0, 2]], 0.01, atol=1e-7)
  np.testing.assert_allclose(smooth.sum(), 1.0, atol=1e-6)


def test_threshold_targets():
  targets = jnp.array([[0.7, 0.3, 0.0], [0.1, 0.15, 0.75]])
  expected = [[1, 1, 0], [0, 0, 1]]
  out = augment.threshold_targets(targets, 0.2)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_array_equal(augment.threshold_targets(targets, 0.0), targets)
  traced = jax.jit(augment.threshold_targets)
  np.testing.assert_array_equal(traced(targets, 0.2), expected)
  np.testing.assert_array_equal(traced(targets, 0.0), targets)


def test_mixup_cutmix_inside_jit_with_traced_alphas(batch):
  x, t = batch
  step = jax.jit(lambda key, x, t, alpha: augment.mixup_cutmix(
      key, x, t, mixup_alpha=alpha, cutmix_alpha=alpha, switch_prob=0.0))
  mixed, targets = step(jax.random.key(1), x, t, 1.0)
  lam = _lam(targets)[0]
  assert 0 < lam < 1
  np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[::-1], atol=1e-6)
  mixed, targets = step(jax.random.key(1), x, t, 0.0)
  np.testing.assert_array_equal(mixed, x)
