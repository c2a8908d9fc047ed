"""Multi-task training on accelerate (Eq. 2): config, data feed, methods, checkpoints, the loop."""

from .config import ModelConfig, OptimConfig, TrainConfig, config_from_dict, load_train_config
from .trainer import Trainer, train

__all__ = ["ModelConfig", "OptimConfig", "TrainConfig", "Trainer", "config_from_dict", "load_train_config", "train"]
