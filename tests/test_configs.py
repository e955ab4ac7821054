"""Every experiment config: its documentation, its recipe, and its `:smoke` variant training a
population of 4 (and computing Fisher features) on tiny mock data on this CPU."""

import importlib
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from actbench import models
from actbench.engine import data, optim, train
from actbench.fisher import experiment as fisher_features
from configs import common

TASK_CONFIGS = ["cnn", "resnet", "vit", "cifar100_allcnnc", "cifar100_resnet56",
                "imagenet_resnet50", "imagenet_mobilevit", "imagenet_coatnet"]
ALL_CONFIGS = ["quickstart", "digits_bench", "digits_bench_v1"] + TASK_CONFIGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name, arg=""):
  return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_docstring_says_command_time_and_outputs(name):
  doc = importlib.import_module(f"configs.{name}").__doc__
  assert f"python -m actbench.main --config=configs/{name}.py" in doc
  assert re.search(r"\b(second|minute|hour|GPU-hour|day)s?\b", doc)  # the expected runtime
  assert ":smoke" in doc
  assert "workdir" in doc.lower()


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_unknown_argument_is_refused(name):
  with pytest.raises(ValueError, match="unknown config argument 'tiny'"):
    _config(name, "tiny")


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_config_names_a_registered_model_and_known_dataset(name):
  for arg in ("", "smoke"):
    config = _config(name, arg)
    assert config.model.name in models.MODELS
    assert config.dataset.name in data.DATASETS


def test_real_task_configs_search_and_smoke_variants_train_four():
  for name in TASK_CONFIGS:
    smoke = _config(name, "smoke")
    assert smoke.mode == "train"
    assert len(smoke.activations) * len(smoke.seeds) == 4
  for name in ["cifar100_allcnnc", "cifar100_resnet56", "imagenet_resnet50",
               "imagenet_mobilevit", "imagenet_coatnet"]:
    config = _config(name)
    assert config.mode == "search" and config.search.space == "binary(unary(x),unary(x))"
  assert _config("cifar100_allcnnc").dataset.name == "cifar100"
  assert _config("cifar100_resnet56").model.name == "resnet56"


def test_vit_recipe_matches_method_section_5():
  config = _config("vit")
  t = config.train
  assert (config.dataset.name, config.dataset.image_size) == ("imagenette", 160)
  assert (config.model.name, config.model.kwargs.width_multiplier) == ("mobilevit_v2", 0.5)
  assert (t.batch_size, t.optimizer, t.learning_rate) == (256, "adamw", 4e-3)
  assert (t.weight_decay, t.weight_decay_on, t.grad_clip_norm) == (0.02, "kernels", 1.0)
  assert (t.loss, t.target_threshold) == ("sigmoid_binary_cross_entropy", 0.2)
  assert (t.randaugment_layers, t.randaugment_magnitude, t.crop_min_scale) == (2, 6.0, 0.08)
  assert (t.mixup_alpha, t.cutmix_alpha, t.eval_crop_fraction) == (0.1, 1.0, 0.95)
  assert config.seeds == (0,)
  steps = 10  # per epoch
  schedule = optim.learning_rate_schedule(t, steps)
  assert np.isclose(schedule(0), 1e-4)
  assert np.isclose(schedule(5 * steps), 4e-3)  # peak after 5 warm-up epochs
  assert np.isclose(schedule(55 * steps), (4e-3 + 1e-6) / 2, rtol=1e-3)  # cosine midpoint
  assert np.isclose(schedule(105 * steps), 1e-6)


def test_vit_optimizer_decays_kernels_only():
  t = _config("vit").train
  optimizer = optim.make_optimizer(t, 10)
  params = {"Conv_0": {"kernel": np.ones((2, 2), np.float32), "bias": np.ones(2, np.float32)},
            "GroupNorm_0": {"scale": np.ones(2, np.float32), "bias": np.ones(2, np.float32)}}
  zero_grads = jax.tree.map(np.zeros_like, params)
  updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
  # With zero gradients only the decoupled decay moves parameters: -lr * 0.02 * p on kernels.
  np.testing.assert_allclose(updates["Conv_0"]["kernel"], -1e-4 * 0.02, rtol=1e-5)
  for leaf in (updates["Conv_0"]["bias"], updates["GroupNorm_0"]["scale"],
               updates["GroupNorm_0"]["bias"]):
    np.testing.assert_array_equal(leaf, 0.0)


def test_coatnet_recipe_warms_up_ten_thousand_steps_then_decays_linearly():
  t = _config("imagenet_coatnet").train
  steps_per_epoch = 1_271_167 // 4096
  schedule = optim.learning_rate_schedule(t, steps_per_epoch)
  warmup = int(t.warmup_epochs * steps_per_epoch)
  assert abs(warmup - 10_000) <= steps_per_epoch
  assert np.isclose(schedule(warmup), 1e-3)
  total = t.num_epochs * steps_per_epoch
  assert np.isclose(schedule((warmup + total) // 2), 5e-4, rtol=1e-2)
  assert np.isclose(schedule(total), 0.0, atol=1e-9)


@pytest.fixture(scope="module")
def smoke_datasets(smoke_tfds_dir):
  loaded = {}

  def load(config):
    config.dataset.data_dir = smoke_tfds_dir
    key = (config.dataset.name, config.dataset.image_size)
    if key not in loaded:
      loaded[key] = train.load_dataset(config)
    return loaded[key]
  return load


# Smoke variants whose model and recipe other default tests already train run with --runslow
# (the default suite must stay under 15 minutes on 2 cores): vit's and imagenet_mobilevit's
# (vit's with 1,000 classes in bfloat16) MobileViT trains in test_imagenet_models.py, the ViT
# recipe is checked field by field here, and its pieces (AdamW, RandAugment, mixup, schedules)
# in test_optim.py, test_augment.py and test_objectives.py;
# cifar100_allcnnc is cnn's with 100 classes (cifar100_resnet56 covers CIFAR-100); cnn's trains
# from prepared files in test_prepare.py; ResNet-50's and CoAtNet-0's training steps run in
# test_imagenet_models.py and test_coatnet.py, bfloat16 in test_train.py, and CoAtNet's smoke
# Fisher features below; cifar100_resnet56 is resnet's deeper, with CIFAR-100's classes (loaded
# in test_data.py).
SLOW_SMOKE = ("imagenet_mobilevit", "cifar100_allcnnc", "cnn", "imagenet_resnet50",
              "imagenet_coatnet", "cifar100_resnet56", "vit")


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.extended) if name in SLOW_SMOKE else name
    for name in TASK_CONFIGS])
def test_smoke_variant_trains_a_population_of_four(name, smoke_datasets):
  config = _config(name, "smoke")
  dataset = smoke_datasets(config)
  result = train.train_population(config, config.activations, config.seeds, dataset=dataset)
  assert len(result.members()) == 4
  steps = dataset.train.num_batches(config.train.batch_size)
  assert steps >= 2 and len(result.history[0]["epochs"]) == config.train.num_epochs
  by_activation = result.by_activation()
  healthy = [a for a, row in by_activation.items() if not row["diverged"]]
  assert len(healthy) >= 3, by_activation
  for activation in healthy:
    row = by_activation[activation]
    assert np.isfinite(row["train_loss"]) and row["train_loss"] > 0
    assert 0.0 <= row["validation_accuracy"] <= 1.0 and 0.0 <= row["test_accuracy"] <= 1.0
  # Members differ only in their activation: different functions, different losses.
  losses = [by_activation[a]["train_loss"] for a in healthy]
  assert len(set(np.round(losses, 6))) == len(losses)


# ResNet-50 has only convolutions and one dense layer, like ResNet-56 in test_fisher*.py;
# CoAtNet-0 has MobileViTv2's layer kinds (conv, depthwise conv, dense) and attention too.
# All extended (CI time): each is minutes of XLA:CPU compiles; run them with --runslow.
@pytest.mark.slow
@pytest.mark.parametrize("name", [
    pytest.param("vit", marks=pytest.mark.extended),
    pytest.param("imagenet_resnet50", marks=pytest.mark.extended),
    pytest.param("imagenet_coatnet", marks=pytest.mark.extended)])
def test_smoke_variant_has_fisher_features(name, smoke_datasets):
  config = _config(name, "smoke")
  dataset = smoke_datasets(config)
  result = fisher_features.features(config, list(config.activations), dataset=dataset)
  assert result.features.shape[0] == 4 and not result.failed
  assert np.all(np.isfinite(result.features))
  assert np.all((result.features >= 0) & (result.features <= 1))
  kinds = {layer.kind for layer in result.layers}
  assert {"dense", "conv"} <= kinds
  if name != "imagenet_resnet50":
    assert "depthwise_conv" in kinds
  # What stays out of the approximation: normalization parameters, and CoAtNet's
  # relative position biases.
  for uncovered in result.uncovered:
    assert "Norm" in uncovered.reason or "relative" in uncovered.path.lower(), uncovered
  assert common.SMOKE_ACTIVATIONS == tuple(config.activations)


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_smoke_variant_bounds_its_work_on_a_dataset_of_the_real_size(name):
  config = _config(name, "smoke")
  assert config.dataset.max_examples == common.SMOKE_EXAMPLES
  # synthetic:NAME has the real dataset's size (CIFAR's 50,000 training images, ImageNet's
  # 1.28 million): the smoke run must not train or evaluate on all of them.
  config.dataset.name = f"synthetic:{config.dataset.name}"
  dataset = train.load_dataset(config, progress=False)  # as the launcher loads it
  info = dataset.info
  assert max(info.num_train, info.num_validation, info.num_test) <= common.SMOKE_EXAMPLES
  steps = dataset.train.num_batches(config.train.batch_size)
  eval_batches = -(-(info.num_validation + info.num_test) // config.train.eval_batch_size)
  assert 2 <= steps * config.train.num_epochs <= 8 and eval_batches <= 9
  assert config.fisher.batch_size <= info.num_train


@pytest.mark.slow
def test_launcher_tries_a_config_on_synthetic_data(tmp_path):
  process = subprocess.run(
      [sys.executable, "-m", "actbench.main", "--config=configs/quickstart.py:smoke",
       "--config.mode=train", "--config.dataset.name=synthetic:digits",
       "--config.activations=('relu(x)','tanh(x)')", "--config.train.num_epochs=1",
       "--config.checkpoint_every_epochs=0", f"--workdir={tmp_path}"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
      check=False)
  assert process.returncode == 0, process.stderr[-3000:]
  with open(tmp_path / "results.json", encoding="utf-8") as f:
    results = json.load(f)
  assert len(results["members"]) == 2
  # Random labels: nothing to learn, so about chance (10 classes) on the 64 test images kept.
  for member in results["members"]:
    assert 0.0 <= member["test_accuracy"] <= 0.25, member
