"""Training: the loop, optimizers, precision, checkpoints, callbacks, distribution."""
