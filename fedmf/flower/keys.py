"""The clients' shared Paillier key for ``backend = "paillier_packed"`` (FedMF's setting).

Who holds what: every client (SuperNode) holds the same private key, generated once by
``python -m fedmf.flower.keys PATH`` on a machine the clients trust and copied to each
client out of band (never through the server). A node finds it at the path in its node
config ``paillier-key`` (``flower-supernode --node-config "paillier-key=PATH ..."``) or,
failing that, in the environment variable ``FEDMF_PAILLIER_KEY`` (simulation: every
node of one machine). The run config, which the server sets, never names it. The
server holds only the public key, which the nodes send it in their first reply; the
server checks that all nodes sent the same key. Keys below 2048 bits need the opt-in
``FEDMF_ALLOW_SMALL_KEY=1`` on the nodes and ``paillier-allow-small-key = true`` in
the run config (tests only).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from secagg.paillier.keys import DEFAULT_KEY_BITS, PrivateKey, generate_keypair
from secagg.paillier.serialization import private_key_from_json, private_key_to_json

from ..errors import ConfigError

ENV_KEY, ENV_SMALL = "FEDMF_PAILLIER_KEY", "FEDMF_ALLOW_SMALL_KEY"


def write_key(path: Path, bits: int = DEFAULT_KEY_BITS, *, allow_insecure_small_key: bool = False) -> Path:
    """Generate the clients' key pair and write the private key as JSON (owner-only: mode 0600)."""
    _, sk = generate_keypair(bits, allow_insecure_small_key=allow_insecure_small_key)
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(private_key_to_json(sk))
    return path


def node_key(node_config) -> PrivateKey:
    """This node's copy of the clients' private key (node config, else the environment)."""
    path = node_config.get("paillier-key") or os.environ.get(ENV_KEY)
    if not path:
        raise ConfigError("backend 'paillier_packed' needs the clients' key on every node: node config "
                          f"'paillier-key=PATH' or the environment variable {ENV_KEY}")
    small = os.environ.get(ENV_SMALL, "") == "1"
    try:
        return private_key_from_json(Path(str(path)).read_text(), allow_insecure_small_key=small)
    except OSError as exc:
        raise ConfigError(f"cannot read the Paillier key at {path}: {exc}") from exc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write the clients' shared Paillier private key (JSON, mode 0600)")
    ap.add_argument("path")
    ap.add_argument("--bits", type=int, default=DEFAULT_KEY_BITS)
    ap.add_argument("--allow-insecure-small-key", action="store_true")
    args = ap.parse_args(argv)
    print(write_key(Path(args.path), args.bits, allow_insecure_small_key=args.allow_insecure_small_key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
