"""fedmf: datasets, federated matrix-factorization trainers, metrics and the ``fedmf`` CLI."""

__version__ = "0.1.0"  # the single version source; pyproject.toml reads it
