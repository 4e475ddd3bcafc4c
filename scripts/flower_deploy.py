"""Deploy the SecAgg+ Flower app on this machine: one SuperLink, N SuperNodes, one run.

    python scripts/flower_deploy.py [--nodes 5] [--length 1000] [--drop 0] [--json PATH]

Every server binds 127.0.0.1 only (free ports picked here); FLWR_HOME is a temporary
folder; the processes this script starts are always stopped (each by its own process
group) and the folder removed, whatever happens. The app is ``examples/flower_secagg``
(one round of ``secagg.flower``; the node with partition-id ``--drop`` fails its train
step, ``--drop -1`` keeps every node). The apps run on this Python (runtime dependency
installation is disabled: nothing is downloaded). The ServerApp writes its check (the sum equals
the survivors' quantized inputs) to a JSON file, which this script prints.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower_secagg"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with code {proc.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout} s")


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop the process groups this script started (SIGTERM, then SIGKILL)."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for proc in procs:  # the leaders are gone; wait for their children (app processes) too
        while time.monotonic() < deadline + 10:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def deploy(nodes: int, length: int, drop: int, timeout: float = 300.0) -> dict:
    """Start, run, check and clean up; return the ServerApp's summary."""
    with tempfile.TemporaryDirectory(prefix="flwr-deploy-") as tmp:
        home, logs = Path(tmp) / "home", Path(tmp) / "logs"
        home.mkdir(), logs.mkdir()
        env = dict(os.environ, FLWR_HOME=str(home), FLWR_DISABLE_UPDATE_CHECK="1",
                   FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        link = free_port()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\naddress = "{LOOPBACK}:{link}"\n'
            "insecure = true\n")
        procs: list[subprocess.Popen] = []

        def start(name: str, *args: str) -> subprocess.Popen:
            log = open(logs / f"{name}.log", "w")
            proc = subprocess.Popen(list(args), env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=tmp)
            procs.append(proc)
            return proc

        try:
            superlink = start("superlink", "flower-superlink", "--insecure",
                              "--disable-runtime-dependency-installation", "--host", LOOPBACK,
                              "--port", str(link), "--database", str(Path(tmp) / "state.db"))
            wait_for_port(link, superlink)
            for i in range(nodes):
                port = free_port()
                node = start(f"supernode-{i}", "flower-supernode", "--insecure", "--superlink",
                             f"{LOOPBACK}:{link}", "--host", LOOPBACK, "--port", str(port),
                             "--node-config", f"partition-id={i} num-partitions={nodes}")
                wait_for_port(port, node)
            result_path = Path(tmp) / "result.json"
            run = start("flwr-run", "flwr", "run", str(APP), "deploy", "--stream", "--run-config",
                        f"num-nodes={nodes} length={length} drop-partition={drop} "
                        f"result-path='{result_path}'")
            deadline = time.monotonic() + timeout
            while not result_path.exists() and time.monotonic() < deadline and run.poll() is None:
                time.sleep(0.5)
            if not result_path.exists():
                tails = "\n".join(f"--- {name} ---\n" + (logs / name).read_text()[-1500:]
                                   for name in ("flwr-run.log", "superlink.log"))
                raise RuntimeError(f"the deployed run wrote no result; log tails:\n{tails}")
            time.sleep(0.5)  # the file is written in one call; let it close
            return {**json.loads(result_path.read_text()), "flwr_home": str(home)}
        finally:
            stop(procs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--length", type=int, default=1000)
    ap.add_argument("--drop", type=int, default=0, help="partition-id that fails its train step (-1: none)")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", help="write the summary to this path")
    args = ap.parse_args(argv)
    summary = deploy(args.nodes, args.length, args.drop, args.timeout)
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0 if summary["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
