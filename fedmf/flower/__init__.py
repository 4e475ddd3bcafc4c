"""The trainers as Flower apps (optional: ``pip install "fedmf-toolkit[flower]"``).

* :mod:`.models` (no flwr): each trainer cut at the device / server boundary;
* :mod:`.server_app` (``app``, and :func:`.server_app.run`): the ServerApp, which holds
  the shared model, chooses the participants, drives the aggregation backend and runs
  the trainer's server step;
* :mod:`.client_app` (``app``): the ClientApp, one node = a group of clients (users,
  or PersonalFR client groups) by partition-id, its private state in ``Context.state``;
* :mod:`.keys` (no flwr): the clients' shared Paillier key for ``paillier_packed``.

docs/flower_apps.md has the commands, the run-config keys and who holds what.
"""
