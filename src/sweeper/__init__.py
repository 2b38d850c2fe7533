"""sweeper: hyperparameter search for PyTorch Lightning models.

Hydra composes the configs, Optuna drives the search, MLflow records every run.
Importing this package is cheap; torch and Lightning load only with the
sub-packages that need them (``sweeper.models``, ``sweeper.data``, ``sweeper.training``).
"""

__version__ = "0.1.0"
