"""attacks: privacy attacks against federated recommendation, and their evaluation."""
