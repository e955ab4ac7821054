"""Stage 2 of the method: many candidate activations trained together in one compiled program.

  population.py  activations as data: a population's codes and the sharded member program
  data.py        datasets (digits bundled, TFDS, synthetic), batches and device preprocessing
  augment.py     RandAugment, mixup and CutMix on the device
  objectives.py  losses and the per-step inputs and targets of a recipe
  optim.py       optimizers and learning-rate schedules from config.train
  trainer.py     the compiled program that trains one population (map or vmap, sharded)
  train.py       `train_population`: grouping, epochs, checkpoints and results
"""
