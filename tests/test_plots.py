"""Figures: valid PNGs, and no crash on what searches produce (NaN rows, failed functions)."""

import numpy as np

from actbench.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
  with open(path, "rb") as f:
    header = f.read(24)
  assert header[:8] == PNG_SIGNATURE
  return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_surrogate_map_leaves_out_rows_without_features(tmp_path):
  embedding = np.random.default_rng(0).normal(size=(30, 2))
  embedding[:5] = np.nan  # no features: not drawn
  accuracies = np.linspace(0.1, 0.9, 30)
  accuracies[10:] = np.nan  # not evaluated
  path = plots.surrogate_map(embedding, accuracies, [5, 6, 7], str(tmp_path / "map.png"),
                             names=[f"f{i}(x)" for i in range(30)])
  width, height = _png_size(path)
  assert width > 300 and height > 300


def test_function_shapes_draws_non_finite_functions(tmp_path):
  names = ["relu(x)", "reciprocal(zero(x))", "exp(exp(x))", "tanh(x)", "swish(x)"]
  path = plots.function_shapes(names, str(tmp_path / "shapes.png"),
                               scores={"relu(x)": 0.9, "tanh(x)": 0.8})
  width, height = _png_size(path)
  assert width > height  # 4 panels across, 2 rows
  assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_search_and_quality_curves(tmp_path):
  curves = {"random": np.array([[np.nan, 0.5, 0.6], [0.2, 0.2, 0.7]]),
            "aquasurf": np.array([[0.6, 0.8, 0.8]])}
  _png_size(plots.search_curves(curves, str(tmp_path / "curves.png"), reference=0.9))
  quality = {"union": {"train_sizes": np.array([10, 20]), "spearman_median": [0.5, 0.7],
                       "kendall_median": [0.4, 0.5]}}
  _png_size(plots.quality_curves(quality, str(tmp_path / "quality.png")))
