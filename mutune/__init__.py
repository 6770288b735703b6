"""mutune: tune hyperparameters on a narrow µP proxy, train the wide target with them unchanged."""

__version__ = "0.1.0"
