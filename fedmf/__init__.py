"""fedmf: datasets, federated matrix-factorization trainers, metrics and the ``fedmf`` CLI."""

__version__ = "0.1.0"
