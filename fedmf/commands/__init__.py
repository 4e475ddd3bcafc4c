"""Subcommands of the ``fedmf`` command line (see :mod:`fedmf.cli`)."""
