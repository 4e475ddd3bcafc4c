"""Every Python example in the README runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(code, capsys):
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})


@pytest.mark.parametrize("script, render, data", [
    ("secagg_vs_flower.py", "markdown_table", "secagg_vs_flower.json"),
    ("fedmmf_adaptive.py", "markdown_tables", "fedmmf_adaptive.json"),
])
def test_readme_results_are_rendered_from_the_committed_benchmark_json(script, render, data):
    """The SecAgg-vs-Flower and FedMMF results are the benchmark's own rendering (``--table`` /
    ``--tables``) of the JSON in docs/, not typed in: rerunning a benchmark without
    regenerating the README (or back) fails here."""
    import importlib.util
    import json

    root = README.parent
    spec = importlib.util.spec_from_file_location(script[:-3], root / "bench" / script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = json.loads((root / "docs" / data).read_text())
    assert getattr(bench, render)(result) in README.read_text()
