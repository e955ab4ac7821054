"""Your own model: registered, by import path or as `make_model`, through training, Fisher
features and the search, with the same results as a hand-written training loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from actbench import fisher, models, search
from actbench.engine import data, model_factory, optim, train
from actbench.fisher import experiment
from actbench.search import store
from configs import quickstart
from tests import own_model


@pytest.fixture(scope="module")
def vectors():
  """scikit-learn's digits as 64-vectors: 1,500 to train (10% carved for validation), 297 test."""
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  return data.from_arrays(train=(x[:1500], y[:1500]), test=(x[1500:], y[1500:]))


def small_config(epochs: int = 2):
  config = quickstart.get_config("smoke")
  config.seeds = (0,)
  config.train.num_epochs = epochs
  config.fisher.batch_size = 64
  return config


# ---------------------------------------------------------------- names, paths, fields


def test_import_paths_and_registered_names_resolve():
  assert models.resolve_model("small_cnn") is models.SmallCNN
  assert models.resolve_model("tests.own_model:MLP") is own_model.MLP
  assert models.resolve_model("tests.own_model:make_wide_mlp") is own_model.make_wide_mlp
  models.register_model("test_registered_mlp", own_model.MLP, overwrite=True)
  assert models.resolve_model("test_registered_mlp") is own_model.MLP
  with pytest.raises(models.ModelError, match="already registered"):
    models.register_model("test_registered_mlp", own_model.make_wide_mlp)
  with pytest.raises(models.ModelError, match="did you mean 'small_cnn'"):
    models.resolve_model("smal_cnn")
  with pytest.raises(models.ModelError, match="cannot import module 'no_such_module'"):
    models.resolve_model("no_such_module:Model")
  with pytest.raises(models.ModelError, match="has no 'Nope'"):
    models.resolve_model("tests.own_model:Nope")


def test_fields_are_passed_only_where_the_constructor_takes_them():
  fields = {"num_classes": 3, "dtype": jnp.bfloat16, "conv_implementation": "xla"}
  mlp = models.build(own_model.MLP, jax.nn.relu, optional=fields, required={"hidden": 7})
  assert (mlp.inner.num_classes, mlp.inner.hidden) == (3, 7)  # wrapped: it takes no `train`
  cnn = models.build(models.SmallCNN, jax.nn.relu, optional=fields)
  assert (cnn.num_classes, cnn.dtype, cnn.conv_implementation) == (3, jnp.bfloat16, "xla")
  assert models.takes_train(cnn) and models.takes_train(mlp)
  wide = models.build(own_model.make_wide_mlp, jax.nn.relu, optional=fields)
  assert wide.inner.hidden == 48 and wide.inner.num_classes == 10
  with pytest.raises(models.ModelError, match="takes no field 'depth'"):
    models.build(own_model.MLP, jax.nn.relu, required={"depth": 3})
  with pytest.raises(models.ModelError, match="not a flax.linen.Module"):
    models.build(lambda act: act, jax.nn.relu)


def test_a_model_without_train_gives_the_same_logits_wrapped():
  x = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
  plain = own_model.MLP(jax.nn.relu)
  wrapped = models.build(own_model.MLP, jax.nn.relu)
  variables = wrapped.init(jax.random.key(0), x, train=False)
  expected = plain.apply({"params": variables["params"]["inner"]}, x)
  np.testing.assert_array_equal(wrapped.apply(variables, x, train=True), expected)


def test_the_model_is_checked_against_the_data_before_any_work(vectors):
  check = model_factory.check
  check(model_factory.GivenModel(own_model.MLP), (64,), 10)
  with pytest.raises(models.ModelError, match=r"must return logits of shape \(2, 10\)"):
    check(model_factory.GivenModel(lambda act: own_model.MLP(act, num_classes=3)), (64,), 10)
  with pytest.raises(models.ModelError, match=r"fails on inputs of shape \(batch, 64\)"):
    check(model_factory.GivenModel(lambda act: models.SmallCNN(act)), (64,), 10)


# ---------------------------------------------------------------- training


def _reference_training(config, dataset, make_model, act, seed):
  """The same recipe as a plain jitted loop, one model: validation (loss, accuracy)."""
  steps = dataset.train.num_batches(config.train.batch_size)
  optimizer = optim.make_optimizer(config.train, steps)
  model = make_model(act)
  key = jax.random.key(seed, impl="rbg")
  params = model.init({"params": key, "dropout": key},
                      jnp.zeros((1,) + dataset.info.input_shape), train=False)["params"]
  state = optimizer.init(params)

  @jax.jit
  def step(params, state, x, y):
    def loss(p):
      logits = model.apply({"params": p}, x, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    grads = jax.grad(loss)(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for epoch in range(config.train.num_epochs):
    for rows in dataset.train.batch_indices(config.train.batch_size, seed=config.seed,
                                            epoch=epoch):
      batch = dataset.train.gather(rows)
      params, state = step(params, state, batch["image"], batch["label"])
  batch = dataset.validation.gather(np.arange(dataset.validation.num_examples))
  logits = model.apply({"params": params}, batch["image"], train=False)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  return float(loss), float(np.mean(np.argmax(logits, -1) == batch["label"]))


@pytest.mark.slow
def test_own_model_and_data_train_like_a_hand_written_loop(vectors):
  config = small_config(epochs=3)
  result = train.train_population(config, ["relu(x)", "tanh(x)"], [0, 1], dataset=vectors,
                                  make_model=own_model.MLP)
  assert result.diverged == [False] * 4
  assert "test_accuracy" in result.metrics
  for index, (name, act) in enumerate([("relu", jax.nn.relu)] * 2 + [("tanh", jnp.tanh)] * 2):
    loss, accuracy = _reference_training(config, vectors, model_factory.GivenModel(own_model.MLP),
                                         act, result.seeds[index])
    assert result.metrics["validation_loss"][index] == pytest.approx(loss, rel=1e-3), name
    assert abs(result.metrics["validation_accuracy"][index] - accuracy) <= 1 / 150, name
  # The same model by import path in the config, its fields from config.model.kwargs.
  config.model.name = "tests.own_model:MLP"
  config.model.kwargs = {"hidden": 32}
  by_path = train.train_population(config, ["relu(x)", "tanh(x)"], [0, 1], dataset=vectors)
  assert by_path.metrics == result.metrics


def test_own_model_fisher_features_equal_kfac_on_the_model_itself(vectors):
  config = small_config()
  # The first layer's A is singular (digits has pixels that are always 0), and so are the
  # logits layer's G (softmax gradients sum to zero) and ReLU's G where a unit is dead: their
  # zero eigenvalues are roundoff of either sign, kept or dropped depending on the program,
  # which moves the CDF by whole bins (0.03 with fisher.seed = 2). The relative floor drops
  # them in both programs (test_fisher's floor test), so the two agree to roundoff.
  config.fisher.eigenvalue_floor = 1e-6
  result = fisher.features(config, ["relu(x)", "tanh(x)"], dataset=vectors,
                           make_model=own_model.MLP)
  assert not result.failed and [layer.kind for layer in result.layers] == ["dense", "dense"]
  images, labels = experiment.fisher_batch(config, vectors)
  make_model = model_factory.GivenModel(own_model.MLP)
  variables = fisher.init_variables(make_model, images.shape[1:], int(config.fisher.seed))
  for i, act in enumerate((jax.nn.relu, jnp.tanh)):
    factors = fisher.kfac_factors(make_model(act), variables, images, labels)
    log_eigs, dropped = fisher.log_eigenvalues(factors, eigenvalue_floor=1e-6)
    expected = fisher.cdf_features(log_eigs, [f.num_weights for f in factors])
    np.testing.assert_allclose(result.features[i], expected, atol=1e-6)
    np.testing.assert_array_equal(result.dropped[i], dropped)
  assert not np.allclose(result.features[0], result.features[1])


# ---------------------------------------------------------------- search


def tiny_search_config():
  config = small_config(epochs=1)
  config.search.unary = ("zero", "identity", "relu", "tanh", "sigmoid")
  config.search.binary = ("add", "max")
  config.search.baselines = ("relu(x)", "tanh(x)")
  config.search.budget = 4
  config.search.population_size = 4  # one round: one compiled program
  return config


@pytest.mark.slow
def test_search_with_own_model_and_data_refuses_changed_ones(vectors, tmp_path):
  workdir = str(tmp_path / "search")
  config = tiny_search_config()
  summary = search.run(config, workdir, dataset=vectors, make_model=own_model.MLP,
                       progress=False)
  assert len(summary.evaluations) == 4
  with store.Store(search.store_path(workdir)) as db:
    assert db.get_meta("data") == vectors.fingerprint
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  other = data.from_arrays(train=(x[:1400], y[:1400]), test=(x[1400:], y[1400:]))
  with pytest.raises(store.StoreError, match="on other data than 'arrays'"):
    search.run(config, workdir, dataset=other, make_model=own_model.MLP, progress=False)
  with pytest.raises(store.StoreError, match="with another model"):
    search.run(config, workdir, dataset=vectors, make_model=own_model.make_wide_mlp,
               progress=False)
  # Same data and model: the finished search is found complete, nothing is trained again.
  again = search.run(config, workdir, dataset=vectors, make_model=own_model.MLP,
                     progress=False)
  assert {i: e.finished_at for i, e in again.evaluations.items()} == {
      i: e.finished_at for i, e in summary.evaluations.items()}


def test_a_bad_model_fails_before_anything_is_written(vectors, tmp_path):
  workdir = tmp_path / "never"
  with pytest.raises(models.ModelError, match="fails on inputs"):
    search.run(tiny_search_config(), str(workdir), dataset=vectors,
               make_model=lambda act: models.SmallCNN(act), progress=False)
  assert not workdir.exists()
