"""Running one training job from a composed config."""

from sweeper.training.run import TrainResult, run_training

__all__ = ["TrainResult", "run_training"]
