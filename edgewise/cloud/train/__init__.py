"""Training: configs, feature cache, the SER trainer with HRF and distillation, metrics."""
