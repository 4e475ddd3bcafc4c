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


def test_readme_secagg_table_is_rendered_from_the_committed_benchmark_json():
    """The SecAgg-vs-Flower results are `bench/secagg_vs_flower.py --table` of the JSON in
    docs/, not typed in: rerunning the benchmark and not the README (or back) fails here."""
    import importlib.util
    import json

    root = README.parent
    spec = importlib.util.spec_from_file_location("secagg_vs_flower", root / "bench" / "secagg_vs_flower.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = json.loads((root / "docs" / "secagg_vs_flower.json").read_text())
    assert bench.markdown_table(result) in README.read_text()
