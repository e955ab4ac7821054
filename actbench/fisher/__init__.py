"""Fisher information features: the K-FAC spectrum of a network at initialization.

METHOD.md section 3. For a model built with a candidate activation, at initialization, on one
batch of B examples:

- The Fisher is block diagonal, one block per weighted layer, each block A (x) G (K-FAC; KFC
  for convolutions). Covered layers are every `nn.Dense` and `nn.Conv` (so also
  `actbench.models.layers.Conv`: any stride, SAME/VALID/explicit/circular/reflect/causal padding,
  kernel dilation, with or without bias), found by intercepting their `__call__` on the
  unmodified model. Other weights (BatchNorm scales and offsets, embeddings, transposed
  convolutions) are listed as `Uncovered` by path, never silently dropped.
- A = sum over rows of a a^T / B, a = the layer input with a 1 appended when the layer has a
  bias; for a convolution the rows are the kh*kw*C_in patches at every output location, with
  the layer's own padding and stride.
- G = sum over rows of g g^T / (B*T), g = the gradient of the loss with respect to the layer's
  output (pre-activation) for one example at one of the T output locations (T = 1 for a Dense
  on (B, d) inputs). The loss is the SUM over examples of the cross-entropy, so g is
  per-example and not scaled by 1/B. Labels: the batch's (empirical Fisher, the default) or
  drawn from the model's predictive distribution (`fisher_type='sampled'`, with a key).
- Depthwise (and grouped) convolutions: output channel o only sees the k*k patch of its own
  group's input channels, so the layer's weights split into one Kronecker block per group:
  A_g ((k*k*C_in/groups [+1]) square) and G_g ((C_out/groups) square; a scalar for a depthwise
  conv with multiplier 1). The layer's eigenvalues are the products per group.
- Log-eigenvalues: per block every log a_i + log g_j over the eigenvalues of A and G
  (eigh in float64 on the host, or on the device: `eigenvalues='device'`, see
  `device_eigenvalues`); products with a factor eigenvalue <= 0 are dropped and counted.
- Feature per layer: np.histogram of the log-eigenvalues with num_weights // 100 equally
  spaced edges on [-100, 100] (num_weights includes the bias), cumulated and normalized to end
  at 1; layers with fewer than 200 weights get 2 edges (one bin, the CDF [1.0]). Layers are
  concatenated in model order. A layer with no log-eigenvalue in range gives NaN.

The models run in inference mode by default (`apply_kwargs={'train': False}`: no dropout,
batch norm with its running statistics), so examples do not interact and the per-example
gradients come from one backward pass of the summed loss.

`published_shift=True` reproduces the constant shifts of the published Act-Bench features: the
loss is a batch mean (G / B^2) and a Dense layer's A and G are divided by its input width + 1
instead of by their count; so conv log-eigenvalues shift by -2 log B and dense ones by
-2 log(d_in + 1) on (B, d) inputs, and by log T - 2 log(d_in + 1) on (B, T, d) inputs (T
tokens per example, as in the attention and MLP layers of MobileViTv2 and CoAtNet; the
published files, of convolutional networks, cannot tell which convention they would use).

    from actbench import fisher
    factors = fisher.kfac_factors(model, variables, images, labels)
    log_eigs, dropped = fisher.log_eigenvalues(factors)
    x = fisher.cdf_features(log_eigs, [f.num_weights for f in factors])
    result = fisher.population_features(make_model, encoding, codes, images, labels)
    result.features      # (n, d) float32, NaN rows for result.failed
"""

from actbench.fisher.capture import Layer, Uncovered
from actbench.fisher.kfac import (FisherFeatures, LayerFactors, cdf_features, find_layers,
                                  init_variables, kfac_factors, log_eigenvalues,
                                  population_features)

__all__ = [
    "FisherFeatures", "Layer", "LayerFactors", "Uncovered", "cdf_features", "features",
    "find_layers", "init_variables", "kfac_factors", "log_eigenvalues", "population_features",
]


def __getattr__(name):
  # `features(config, names)` (experiment.py) needs the training stack; import it on first use
  # so that `import actbench.fisher` stays light.
  if name == "features":
    from actbench.fisher.experiment import features  # pylint: disable=import-outside-toplevel
    return features
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
