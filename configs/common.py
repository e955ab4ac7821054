"""Sections shared by every experiment config; each config fills in its recipe.

Every field is listed here with its meaning, so a config file only states what it changes.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = "train"  # what `python -m actbench.main` does (see actbench/main.py)
  config.seed = 0  # fixes every random choice: data split and order, init, dropout, search
  config.activations = ("elu(x)", "relu(x)", "selu(x)", "sigmoid(x)", "softplus(x)",
                        "softsign(x)", "swish(x)", "tanh(x)")  # mode train: what to train
  config.seeds = (0,)  # mode train: each activation trains once per seed (median reported)
  config.checkpoint_every_epochs = 1  # Orbax checkpoint period in the workdir (0: never)

  config.dataset = ml_collections.ConfigDict()
  # digits (bundled) | cifar10 | cifar100 | imagenette | imagenet2012 | npz:PATH | tfds:NAME |
  # synthetic:NAME (random images shaped like built-in dataset NAME: try a config without data)
  config.dataset.name = "digits"
  config.dataset.data_dir = ""  # datasets' root ('' = $TFDS_DATA_DIR or ~/tensorflow_datasets)
  config.dataset.download = True  # cifar10, cifar100, imagenette: prepare on first use if missing
  # carved from train: a count (>= 1) or a fraction (0 = the dataset's default)
  config.dataset.validation_size = 0.0
  config.dataset.image_size = 0  # network input side for ImageNet-like data (0 = default)
  config.dataset.image_key = "image"  # tfds:NAME datasets: the feature holding the image...
  config.dataset.label_key = "label"  # ...and the one holding the class label
  # k >= 2: k-fold cross-validation over train + validation (every example validates once; a
  # run per fold, accuracies averaged); 0: the validation split as carved
  config.dataset.folds = 0
  # at most this many examples of each split, drawn by config.seed after the validation split
  # is carved: a quick run on a large dataset (0: all)
  config.dataset.max_examples = 0

  config.model = ml_collections.ConfigDict()
  # a name in actbench.models.MODELS (or registered), or an import path "package.module:Factory"
  config.model.name = "small_cnn"
  config.model.dtype = "float32"  # computation dtype: float32 | bfloat16 (params stay float32)
  config.model.conv_implementation = "auto"  # auto | xla | im2col (auto: im2col on CPU)
  config.model.kwargs = ml_collections.ConfigDict()  # further model fields, e.g. use_batch_norm

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128  # examples per step, shared by every member
  config.train.num_epochs = 10  # passes over the training split
  config.train.optimizer = "sgd"  # sgd | adam | adamw
  config.train.learning_rate = 0.1  # peak learning rate
  config.train.momentum = 0.9  # sgd momentum (0: plain sgd)
  config.train.nesterov = False  # Nesterov momentum for sgd
  config.train.weight_decay = 0.0  # L2 for sgd/adam, decoupled for adamw
  config.train.weight_decay_on = "all"  # all | kernels (none on biases, norms, position biases)
  config.train.schedule = "constant"  # constant | cosine | linear | step
  config.train.end_learning_rate = 0.0  # cosine and linear: the final rate
  config.train.decay_epochs = ()  # step schedule: epochs at which the rate is multiplied...
  config.train.decay_factor = 0.1  # ...by this
  config.train.warmup_epochs = 0.0  # linear warm-up length
  config.train.warmup_learning_rate = 0.0  # warm-up start
  config.train.grad_clip_norm = 0.0  # global gradient-norm clip (0: none)
  # how a diverged run (seed, fold) counts: fail (the function fails if any run does) |
  # chance (it scores chance accuracy; the function fails only if every run does)
  config.train.divergence = "fail"
  config.train.loss = "softmax_cross_entropy"  # | sigmoid_binary_cross_entropy (per class)
  config.train.label_smoothing = 0.0  # softmax cross-entropy label smoothing
  config.train.target_threshold = 0.0  # binary cross-entropy: targets > this become 1 (0: soft)
  config.train.augment = True  # augment training batches (all below; digits has no crop/flip)
  config.train.crop_min_scale = 0.08  # ImageNet-like data: random resized crop's least area
  config.train.eval_crop_fraction = 0.875  # ImageNet-like data: evaluation centre crop
  config.train.randaugment_layers = 0  # RandAugment ops per image (0: off)
  config.train.randaugment_magnitude = 0.0  # their strength: 0..10 (above 10 extrapolates)
  config.train.mixup_alpha = 0.0  # mixup Beta(alpha, alpha) (0: off); targets become soft
  config.train.cutmix_alpha = 0.0  # CutMix Beta(alpha, alpha) (0: off)
  config.train.mixup_switch_prob = 0.5  # both on: CutMix with this probability per batch
  config.train.steps_per_call = 0  # steps fused into one compiled call (0: a whole epoch)
  config.train.eval_batch_size = 0  # 0: batch_size
  config.train.eval_batches_per_call = 0  # evaluation batches per compiled call (0: all)

  config.population = ml_collections.ConfigDict()
  # auto | map (lax.map, CPU) | vmap (accelerators) | grouped (vmap in groups of members
  # sorted by operator; only the operators a group selects run)
  config.population.strategy = "auto"
  config.population.group_size = 8  # grouped: members per vmapped group
  config.population.normalize = False  # train (f - E f) / std f under N(0,1) instead of f
  config.population.schema = ""  # encode over this search space ('' = infer from the names)

  config.fisher = ml_collections.ConfigDict()  # Fisher features of candidates at initialization
  config.fisher.method = "kfac"  # kfac (the paper's K-FAC spectrum) | lanczos (exact, SLQ)
  config.fisher.batch_size = 128  # one training batch (epoch 0's first, no augmentation)
  config.fisher.type = "empirical"  # kfac: empirical (true labels) | sampled (model's labels)
  config.fisher.seed = 0  # initialization (and sampled labels)
  # kfac: factor eigenvalues below this fraction of the factor's largest (0: keep all > 0,
  # the default: it ranks as well on both digits tables, bench/fisher_floor.py)...
  config.fisher.eigenvalue_floor = 0.0
  config.fisher.floor_mode = "drop"  # ... are dropped | clamp (raised to it)
  # kfac: where factor eigenvalues are computed: host (float64, every core) | device (float64
  # on the GPU) | device_float32 (for TPUs; features move, bench/fisher_precision.py)
  config.fisher.eigenvalues = "host"
  config.fisher.published_shift = False  # kfac: the constant shifts of published Act-Bench files
  config.fisher.batch_chunk = 32  # examples per pass: bounds memory (0: the whole batch)
  config.fisher.lanczos_probes = 16  # lanczos: Rademacher probes averaged
  config.fisher.lanczos_bins = 100  # lanczos: CDF bins over log-eigenvalues in [-100, 100]

  config.search = ml_collections.ConfigDict()  # modes search and benchmark
  config.search.space = "binary(unary(x),unary(x))"  # schema of the space (METHOD.md section 2)
  config.search.unary = ()  # operators of unary placeholders (() = the benchmark space's 27)
  config.search.binary = ()  # operators of binary placeholders (() = the 7 binary)
  config.search.nary = ()  # operators of n-ary placeholders (() = the 4 n-ary)
  config.search.baselines = ()  # evaluated first (() = elu relu selu sigmoid softplus ...)
  config.search.strategy = "aquasurf"  # aquasurf | random | evolution
  config.search.budget = 100  # classes evaluated in all, baselines and those stopped early too
  config.search.population_size = 8  # classes trained together per round (x len(seeds))
  config.search.features_chunk = 256  # Fisher features computed and stored this many at a time
  # Fisher features for the baselines plus at most this many classes, picked in rounds as the
  # search goes; the surrogate proposes only among them (0 = every class; README "Large spaces")
  config.search.fisher_budget = 0
  config.search.fisher_round = 0  # classes a round featurizes (0 = a tenth of the budget)
  config.search.fisher_every = 0  # evaluations between rounds (0 = population_size)
  config.search.fisher_choice = "outputs"  # a round's picks: outputs (an outputs-only k-NN on
  # the evaluations; diversity before any) | random
  # Successive halving (README "Early stopping"): a round trains to each rung's epoch in turn
  # and only the best 1/eta of its functions by validation accuracy there go on; the others
  # are recorded as stopped. The last rung must be train.num_epochs; () = off.
  config.search.fidelity = ml_collections.ConfigDict()
  config.search.fidelity.rungs = ()  # e.g. (2, 5, 10)
  config.search.fidelity.eta = 3  # 1/eta of a rung's functions go on to the next
  config.search.worker = ""  # this worker's name in the store ('' = hostname-process index)
  config.search.claim_ttl_s = 600.0  # a dead worker's claims are taken over after this
  # where the store lives: '' = search.sqlite in the workdir (the workers of one host) |
  # postgresql://user@host:port/db (workers on many machines, README "Many machines")
  config.search.store = ""
  config.search.name = ""  # the search's name in a postgresql:// store (every worker the same)
  config.search.store_retry_s = 600.0  # how long a worker waits out an unreachable database

  config.surrogate = ml_collections.ConfigDict()  # METHOD.md section 4
  config.surrogate.features = "union"  # union (UMAP of outputs + Fisher) | outputs | fisher | raw
  config.surrogate.neighbors = 3  # k of the k-nearest-neighbour regression
  config.surrogate.random_state = 42  # UMAP's seed

  config.benchmark = ml_collections.ConfigDict()  # mode benchmark (uses config.search.space)
  config.benchmark.table = "benchmark.json"  # the Act-Bench-format table, in the workdir

  config.replay = ml_collections.ConfigDict()  # mode replay
  config.replay.table = ""  # a path, a published name (cnn, resnet, vit); "" = the workdir's table
  config.replay.strategies = ("aquasurf", "random", "evolution")  # compared strategies
  config.replay.seeds = 20  # replays per strategy (seeds 0..n-1)
  config.replay.budget = 100  # functions each replay evaluates
  config.replay.tie = 0.0  # a function this close to the best accuracy counts as the best
  # Replays by training epochs (tables with learning curves, config.search.fidelity set): the
  # epochs each may spend (0 = what random search needs to find the best in 90% of seeds)
  config.replay.epoch_budget = 0
  config.replay.quality_features = ("union", "outputs", "fisher", "raw")  # surrogate ablations
  config.replay.quality_sizes = (25, 50, 100, 200, 400)  # training-set sizes of the quality test

  config.report = ml_collections.ConfigDict()  # figures of modes search, benchmark and report
  config.report.best_functions = 8  # functions drawn in best_functions.png
  config.report.document = ""  # mode report: a Markdown report of the workdir's benchmark
  config.report.title = "Benchmark report"  # ... its title
  config.report.introduction = ""  # ... its first paragraph (Markdown)
  config.report.recipe = ""  # ... how the table was trained and why (after the introduction)
  config.report.discussion = ""  # ... and what the targets' figures mean, after them
  config.report.previous_table = ""  # ... an earlier version's table, its figures beside these
  config.report.previous_replay = ""  # ... its mode replay's replay-summary.json
  config.report.previous_label = "previous"  # ... and how the report names it
  # Watching a run (README "Watching a search"): TensorBoard event files in
  # <workdir>/tensorboard/ while a search, benchmark or train run goes on
  config.report.tensorboard = True
  config.report.html = True  # <workdir>/report.html, rewritten after every round of a search
  config.report.watch_s = 0  # mode report: rewrite report.html every N s until the search ends
  return config


def cifar_config(dataset: str = "cifar10") -> ml_collections.ConfigDict:
  """The base config with what the CIFAR benchmarks share: data, batching, evaluation, seeds."""
  config = base_config()
  config.dataset.name = dataset
  config.dataset.validation_size = 5000  # held out of the 50,000 training images
  config.train.batch_size = 128
  config.train.optimizer = "sgd"
  config.train.momentum = 0.9
  config.train.schedule = "step"
  config.train.decay_factor = 0.1
  config.train.augment = True  # flips and translations (pad 4, random 32x32 crop)
  config.train.steps_per_call = 50  # ~7 calls per epoch; bounds the data on device
  config.train.eval_batch_size = 500
  config.train.eval_batches_per_call = 5
  config.seeds = (0, 1, 2)  # Act-Bench: 3 runs per function, median reported
  return config


def imagenet_config(dataset: str = "imagenet2012", image_size: int = 224):
  """The base config with what the ImageNet-like tasks share: data, evaluation, one seed."""
  config = base_config()
  config.dataset.name = dataset  # imagenet2012 | imagenette (its 160px variant)
  config.dataset.image_size = image_size  # network input side (stored at image_size / 0.875)
  config.train.augment = True  # random resized crop + flip, then what the recipe adds
  config.train.steps_per_call = 50  # bounds the images on device per compiled call
  config.train.eval_batch_size = 250
  config.train.eval_batches_per_call = 4
  config.seeds = (0,)  # one run per function, as Act-Bench-ViT
  config.search.population_size = 8  # functions per round: size it to the accelerator memory
  return config


def vit_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The Act-Bench-ViT training recipe (METHOD.md section 5), on config's data."""
  config.train.batch_size = 256
  config.train.optimizer = "adamw"
  config.train.learning_rate = 4e-3  # 8e-3 per 512 images: scale with the batch size
  config.train.weight_decay = 0.02  # decoupled; optax multiplies it by the rate: 0.02 * lr
  config.train.weight_decay_on = "kernels"  # none on norms, biases and position parameters
  config.train.grad_clip_norm = 1.0
  config.train.warmup_epochs = 5
  config.train.warmup_learning_rate = 1e-4
  config.train.schedule = "cosine"  # over the 100 epochs after the warm-up...
  config.train.end_learning_rate = 1e-6  # ...down to this
  config.train.num_epochs = 105
  config.train.loss = "sigmoid_binary_cross_entropy"
  config.train.target_threshold = 0.2
  config.train.randaugment_layers = 2
  config.train.randaugment_magnitude = 6.0
  config.train.crop_min_scale = 0.08
  config.train.mixup_alpha = 0.1
  config.train.cutmix_alpha = 1.0
  config.train.eval_crop_fraction = 0.95
  return config


SMOKE_ACTIVATIONS = ("elu(x)", "relu(x)", "swish(x)", "tanh(x)")


SMOKE_EXAMPLES = 64  # per split: 8 training steps and 8 test batches of 8


def shrink_for_smoke(config: ml_collections.ConfigDict,
                     image_size: int = 0) -> ml_collections.ConfigDict:
  """A population of 4 for a few steps of tiny batches: `--config=FILE.py:smoke`, for tests
  and for trying a config on its real data in about a minute on a CPU, since every split is
  cut to SMOKE_EXAMPLES (mode train; a recipe's augmentation and loss are kept)."""
  config.mode = "train"
  config.activations = SMOKE_ACTIVATIONS
  config.seeds = (0,)
  config.dataset.validation_size = 8
  config.dataset.max_examples = SMOKE_EXAMPLES
  if image_size:
    config.dataset.image_size = image_size
  config.train.batch_size = 8
  config.train.num_epochs = 1
  config.train.steps_per_call = 0
  config.train.eval_batch_size = 8
  config.train.eval_batches_per_call = 0
  config.fisher.batch_size = 8
  config.search.population_size = 4
  return config
