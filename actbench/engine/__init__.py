"""Stage 2 of the method: many candidate activations trained together in one compiled program.

  population.py  activations as data: a population's codes and the sharded member program
  data.py        datasets (built in, your arrays, TFDS), splits, batches, device preprocessing
  sources.py     where examples come from: arrays, TFDS array_record, prepared files
  transforms.py  crops, flips and normalization on the device
  fetch.py       resumable, verified downloads (datasets and the benchmark tables)
  prepare.py     CIFAR-10/100 and Imagenette prepared without TensorFlow, read by index
  augment.py     RandAugment, mixup and CutMix on the device
  objectives.py  losses and the per-step inputs and targets of a recipe
  optim.py       optimizers and learning-rate schedules from config.train
  model_factory.py  a config's model, or yours, as `act -> nn.Module`, checked against the data
  trainer.py     the compiled program that trains one population (map or vmap, sharded)
  train.py       `train_population`: grouping, epochs, checkpoints and results
"""
