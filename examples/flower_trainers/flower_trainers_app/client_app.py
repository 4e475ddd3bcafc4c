"""ClientApp: fedmf.flower.client_app (one node = a group of clients by partition-id)."""

from fedmf.flower.client_app import app

__all__ = ["app"]
