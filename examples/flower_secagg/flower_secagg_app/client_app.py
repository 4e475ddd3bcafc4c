"""ClientApp: each node's vector lies on the 16-bit quantization grid (exact sums).

The node whose partition-id equals the run config's ``drop-partition`` fails its train
step (it drops after sharing its keys).
"""

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from secagg.flower import secagg_mod

BITS = 16
LEVEL = 2**(BITS - 1) - 1  #: secagg.quantize's L: levels -L..L, step clip / L
CLIP = LEVEL / 2**BITS  #: step 2^-16: every vector below quantizes exactly

app = ClientApp()


def words_of(partition: int, length: int) -> np.ndarray:
    return np.random.default_rng(partition).integers(0, 2 * LEVEL + 1, length)


@app.train(mods=[secagg_mod])
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    length = int(context.run_config["length"])
    if partition == int(context.run_config["drop-partition"]):
        raise RuntimeError(f"partition {partition} drops before sending its masked input")
    x = (words_of(partition, length) - LEVEL) / 2**BITS
    return Message(RecordDict({"update": ArrayRecord({"w": Array(x)}),
                               "metrics": MetricRecord({"partition-id": partition})}), reply_to=msg)
