"""One round of our SecAgg+ in Flower's simulation engine (Ray), one node dropping.

The ServerApp runs in a thread of this process (run_simulation), so the round's result
is handed back through a list. The node with partition-id 0 fails its train step (its
ClientApp raises, Flower sends an error reply): it drops after sharing its keys, the
worst case, and the sum must equal the plain sum of the other nodes' quantized inputs.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytest.importorskip("flwr", reason="flwr is not installed (pip install 'fedmf-toolkit[flower]')")
pytest.importorskip("ray", reason="Flower's simulation engine needs ray (flwr[simulation])")

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

from secagg.flower import SecAggWorkflow, secagg_mod  # noqa: E402

NODES = 5
LENGTH = 1000
GRID_CLIP = (2**15 - 1) / 2**16  #: quantization step 2^-16: grid values quantize exactly


def _words(partition: int) -> np.ndarray:
    return np.random.default_rng(partition).integers(0, 2**16 - 1, LENGTH)


def _apps(results: list):
    client = ClientApp()

    @client.train(mods=[secagg_mod])
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        if partition == 0:
            raise RuntimeError("node 0 goes offline before sending its masked input")
        x = (_words(partition) - (2**15 - 1)) / 2**16
        content = RecordDict({"update": ArrayRecord({"w": Array(x)}),
                              "metrics": MetricRecord({"partition-id": partition})})
        return Message(content, reply_to=msg)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        deadline = time.monotonic() + 60
        while len(list(grid.get_node_ids())) < NODES and time.monotonic() < deadline:
            time.sleep(0.2)
        workflow = SecAggWorkflow("secagg+", clip=GRID_CLIP, precision_bits=16, timeout=60.0)
        results.append(workflow(grid, ArrayRecord({"w": Array(np.zeros(LENGTH))})))

    return server, client


def test_simulation_round_with_a_dropout_sums_the_survivors_exactly(tmp_path, monkeypatch):
    from flwr.simulation import run_simulation

    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    results: list = []
    server, client = _apps(results)
    cpus = max(1, min(2, os.cpu_count() or 1))
    run_simulation(server, client, num_supernodes=NODES,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": cpus, "include_dashboard": False}})
    assert results, "the ServerApp did not finish its round"
    result = results[0]
    assert len(result.dropouts["masked-input"]) == 1
    assert len(result.included) == NODES - 1
    partitions = sorted(int(m["partition-id"]) for m in result.metrics.values())
    assert partitions == list(range(1, NODES))
    np.testing.assert_array_equal(result.words, sum(_words(p) for p in partitions))
    expected = sum((_words(p) - (2**15 - 1)) / 2**16 for p in partitions)
    np.testing.assert_allclose(result.arrays["w"].numpy(), expected, atol=1e-9)
