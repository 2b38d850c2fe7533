"""Networks and the task LightningModules that train them.

Everything here takes plain constructor arguments, so it works with a plain
``pytorch_lightning.Trainer`` and no Hydra::

    from sweeper.models import CNN, Classifier
    model = Classifier(CNN(input_shape=(1, 8, 8), num_outputs=10))

Networks (``MLP``, ``CNN``, ``RNN``) map ``(N, *input_shape)`` to ``(N, num_outputs)``;
task modules (``Classifier``, ``Regressor``, ``Autoencoder``; by task name in ``TASKS``)
add the loss, metrics, optimiser and evaluation report.
"""

from __future__ import annotations

from sweeper.models._base import Backbone, build
from sweeper.models._task import TaskModule
from sweeper.models.autoencoder import Autoencoder
from sweeper.models.classifier import Classifier
from sweeper.models.cnn import CNN
from sweeper.models.mlp import MLP
from sweeper.models.regressor import Regressor
from sweeper.models.rnn import RNN

TASKS: dict[str, type[TaskModule]] = {
    "classification": Classifier,
    "regression": Regressor,
    "autoencoder": Autoencoder,
}

__all__ = [
    "CNN",
    "MLP",
    "RNN",
    "TASKS",
    "Autoencoder",
    "Backbone",
    "Classifier",
    "Regressor",
    "TaskModule",
    "build",
]
