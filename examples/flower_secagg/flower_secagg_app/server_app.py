"""ServerApp: wait for the nodes, run one SecAgg+ round, check it, write the result as JSON."""

import json
import time

import numpy as np
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from secagg.flower import SecAggWorkflow

from .client_app import BITS, CLIP, words_of

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    n, length = int(context.run_config["num-nodes"]), int(context.run_config["length"])
    deadline = time.monotonic() + 120
    while len(list(grid.get_node_ids())) < n and time.monotonic() < deadline:
        time.sleep(0.5)
    t0 = time.perf_counter()
    result = SecAggWorkflow("secagg+", clip=CLIP, precision_bits=BITS, timeout=120)(
        grid, ArrayRecord({"w": Array(np.zeros(length))}))
    seconds = time.perf_counter() - t0
    partitions = sorted(int(m["partition-id"]) for m in result.metrics.values())
    exact = bool(np.array_equal(result.words, sum(words_of(p, length) for p in partitions)))
    summary = {"nodes": n, "length": length, "included_partitions": partitions, "exact": exact,
               "dropouts": {stage: len(nodes) for stage, nodes in result.dropouts.items()},
               "k": result.info["k"], "t": result.info["t"], "round_seconds": seconds}
    print("SECAGG-RESULT " + json.dumps(summary), flush=True)
    if context.run_config["result-path"]:
        with open(str(context.run_config["result-path"]), "w") as fh:
            json.dump(summary, fh)
