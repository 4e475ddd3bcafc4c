"""Run a trainer as a Flower app (examples/flower_trainers) with ``flwr run``, scripted.

    python scripts/flower_trainers.py --model fcf --backend secagg+ --nodes 3 --users 30 [--json PATH]
    python scripts/flower_trainers.py --model fedmf --backend paillier_packed --nodes 3 --deploy

Default: Flower's simulation engine (``flwr run`` on the local federation with
``num-supernodes`` = ``--nodes``; ``flwr run`` starts a local SuperLink, which this script
stops afterwards). ``--deploy``: a ``flower-superlink`` and ``--nodes``
``flower-supernode`` processes on 127.0.0.1 (scripts/flower_deploy.py's launcher).
Either way FLWR_HOME is a temporary folder, runtime dependency installation is disabled
(the apps run on this Python, nothing is downloaded), every process this script started
is stopped (by process group, or by its FLWR_HOME marker for the SuperLink ``flwr run``
spawns) and the ServerApp's summary JSON is printed. For ``paillier_packed`` a test-size
key is generated into the temporary folder and given to the nodes only (environment /
node config), never to the server (docs/flower_apps.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower_trainers"


def _launcher():
    spec = importlib.util.spec_from_file_location("flower_deploy", ROOT / "scripts" / "flower_deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stop_marked(marker: bytes) -> None:
    """Stop processes whose environment holds ``marker`` (this run's FLWR_HOME), by pid."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int(entry.name) != os.getpid() and marker in (entry / "environ").read_bytes():
                os.kill(int(entry.name), signal.SIGTERM)
        except (OSError, ProcessLookupError):
            continue


def run(model: str, backend: str, nodes: int, users: int, rounds: int, *, deploy: bool = False,
        timeout: float = 900.0, key_bits: int = 1024) -> dict:
    """Start, run, collect and clean up; return the ServerApp's summary."""
    launcher = _launcher()
    with tempfile.TemporaryDirectory(prefix="flwr-trainers-") as tmp:
        home, logs, result = Path(tmp) / "home", Path(tmp) / "logs", Path(tmp) / "result.json"
        home.mkdir(), logs.mkdir()
        env = dict(os.environ, FLWR_HOME=str(home), FLWR_DISABLE_UPDATE_CHECK="1",
                   FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        run_config = (f"model='{model}' backend='{backend}' rounds={rounds} users={users} "
                      f"num-nodes={nodes} result-path='{result}'")
        if backend == "paillier_packed":
            sys.path.insert(0, str(ROOT))
            from fedmf.flower.keys import write_key

            key = write_key(Path(tmp) / "clients.key.json", key_bits, allow_insecure_small_key=key_bits < 2048)
            env.update(FEDMF_PAILLIER_KEY=str(key), FEDMF_ALLOW_SMALL_KEY="1" if key_bits < 2048 else "0")
            run_config += f" paillier-allow-small-key={'true' if key_bits < 2048 else 'false'}"
        procs = []
        log = open(logs / "flwr-run.log", "w")
        try:
            if deploy:
                procs += _start_deployment(launcher, env, home, tmp, logs, nodes)
                args = ["flwr", "run", str(APP), "deploy", "--stream", "--run-config", run_config]
            else:
                args = ["flwr", "run", str(APP), "local", "--stream", "--run-config", run_config,
                        "--federation-config", f"num-supernodes={nodes} client-resources-num-cpus=1"]
            import subprocess

            procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True, cwd=tmp))
            deadline = time.monotonic() + timeout
            while not result.exists() and time.monotonic() < deadline and procs[-1].poll() is None:
                time.sleep(0.5)
            time.sleep(0.5)
            if not result.exists():
                raise RuntimeError("the run wrote no result; flwr run log tail:\n"
                                   + (logs / "flwr-run.log").read_text()[-3000:])
            return json.loads(result.read_text())
        finally:
            launcher.stop(procs)
            _stop_marked(f"FLWR_HOME={home}".encode())
            log.close()


def _start_deployment(launcher, env, home: Path, tmp: str, logs: Path, nodes: int) -> list:
    import subprocess

    link = launcher.free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    procs = []

    def start(name, *args):
        proc = subprocess.Popen(list(args), env=env, stdout=open(logs / f"{name}.log", "w"),
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)
        procs.append(proc)
        return proc

    superlink = start("superlink", "flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
                      "--host", "127.0.0.1", "--port", str(link), "--database", str(Path(tmp) / "state.db"))
    launcher.wait_for_port(link, superlink)
    for i in range(nodes):
        port = launcher.free_port()
        node = start(f"supernode-{i}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}",
                     "--host", "127.0.0.1", "--port", str(port),
                     "--node-config", f"partition-id={i} num-partitions={nodes}")
        launcher.wait_for_port(port, node)
    return procs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fedmf", choices=["fedmf", "fcf", "pfedrec", "personalfr"])
    ap.add_argument("--backend", default="plain", choices=["plain", "secagg", "secagg+", "paillier_packed"])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--deploy", action="store_true", help="SuperLink + SuperNodes on localhost")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", help="write the summary to this path")
    args = ap.parse_args(argv)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run(args.model, args.backend, args.nodes, args.users, args.rounds, deploy=args.deploy,
                  timeout=args.timeout)
    summary["script_wall_seconds"], summary["script_cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
