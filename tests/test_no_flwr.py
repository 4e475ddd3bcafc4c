"""secagg and the in-process trainers work without Flower installed (flwr is an extra)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys

    class NoFlower(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("flwr", "ray"):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
            return None

    sys.meta_path.insert(0, NoFlower())
    import numpy as np
    import secagg, secagg.split, secagg.masking, secagg.paillier, fedmf, fedmf.trainer
    import secagg.paillier.halves, fedmf.flower, fedmf.flower.models, fedmf.flower.keys
    from secagg import make_backend
    xs = {c: np.full(8, 0.25 * c) for c in range(4)}
    total = make_backend("secagg+").aggregate(xs).aggregate
    assert np.allclose(total, 1.5, atol=1e-3), total
    assert not any(m.split(".")[0] in ("flwr", "ray") for m in sys.modules)
    try:
        import secagg.flower
    except ImportError as exc:
        assert "fedmf-toolkit[flower]" in str(exc), exc
        print("ok")
""")


def test_secagg_and_trainers_import_and_run_with_flower_hidden():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
