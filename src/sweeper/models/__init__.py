"""Networks and the classification LightningModule.

Everything here takes plain constructor arguments, so it works with a plain
``pytorch_lightning.Trainer`` and no Hydra::

    from sweeper.models import CNN, Classifier
    model = Classifier(CNN(input_shape=(1, 8, 8), num_classes=10))
"""

from sweeper.models._base import Backbone, build
from sweeper.models.classifier import Classifier
from sweeper.models.cnn import CNN
from sweeper.models.mlp import MLP
from sweeper.models.rnn import RNN

__all__ = ["MLP", "CNN", "RNN", "Backbone", "Classifier", "build"]
