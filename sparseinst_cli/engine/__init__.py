"""Training: the Trainer and its run, the solver and schedule, EMA, start-of-training
calibration, init_from transfer, torch.distributed, and the run's files and curves."""
