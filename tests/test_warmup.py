"""fedmf.warmup: the crypto layer's numba kernels are loaded before anything is timed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import numba, importlib
from fedmf.warmup import warm_numba_kernels
modules = ["secagg.paillier.packing", "secagg.masking.quantize", "secagg.masking.vectors"]
kernels = {f"{m}.{k}": v for m in modules for k, v in vars(importlib.import_module(m)).items()
           if isinstance(v, numba.core.registry.CPUDispatcher)}
assert kernels and not any(k.signatures for k in kernels.values()), "a fresh process has none loaded"
warm_numba_kernels()
print(sorted(name for name, k in kernels.items() if not k.signatures))
"""


def test_warm_up_loads_every_backend_kernel_in_a_fresh_process():
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"kernels not loaded by the warm-up: {run.stdout}"
