"""ServerApp: fedmf.flower.server_app (the run config chooses model and backend)."""

from fedmf.flower.server_app import app

__all__ = ["app"]
