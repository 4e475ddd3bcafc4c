"""attacks: privacy attacks against federated recommendation, and their evaluation.

This package imports :mod:`fedmf` (data, model, trainer) and :mod:`secagg`; :mod:`fedmf`
never imports it (its command line does, inside the functions that run an attack).
"""
