"""The ``fedmf`` command line refuses bad input before any work: one line, exit status 2."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fedmf
from fedmf.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
MASKED = ["train", "--dataset", "synthetic", "--mask", "personalized", "--mask-model", "bias"]


@pytest.fixture
def no_work(monkeypatch):
    """Any data loading (the first step of every run) fails the test: refusals come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the command started working before refusing its input")

    import fedmf.commands.attack as attack
    import fedmf.commands.demo as demo
    import fedmf.commands.masked as masked
    import fedmf.commands.train as train

    for module, name in ((train, "load_split"), (masked, "load_split"), (attack, "load_split"),
                         (demo, "synthetic_ratings")):
        monkeypatch.setattr(module, name, forbidden)


def _refused(capsys, argv: list[str], *expected: str) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "", "nothing runs before the refusal"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"a one-line message, got {err!r}"
    for text in expected:
        assert text in lines[0]
    return lines[0]


@pytest.mark.parametrize("argv, expected", [
    ([*MASKED, "--mask-noise", "-1"], ["--mask-noise", ">= 0"]),
    ([*MASKED, "--mask-noise", "nan"], ["--mask-noise", "finite"]),
    ([*MASKED, "--mask-noise", "inf"], ["--mask-noise", "finite"]),
    ([*MASKED, "--mask-scale", "2", "1"], ["--mask-scale", "LOW <= HIGH"]),
    ([*MASKED, "--mask-scale", "0.5", "2"], ["--mask-scale", "HIGH <= 1"]),
    ([*MASKED, "--mask-model", "ridge", "--mask-alpha", "0"], ["--mask-alpha", "> 0"]),
    ([*MASKED, "--policy", "count", "--min-fitted", "-3"], ["--min-fitted", ">= 0"]),
    ([*MASKED, "--participants", "1"], ["--participants", ">= 2"]),
    (["train", "--rounds", "0"], ["--rounds", ">= 1"]),
    (["train", "--lr", "nan"], ["--lr", "finite"]),
    (["train", "--seed", "-1"], ["--seed", ">= 0"]),
    (["train", "-o", "key_bits"], ["KEY=VALUE"]),
    (["attack", "--tol", "-1"], ["--tol", "> 0"]),
    (["attack", "--tol", "2"], ["--tol", "< 1"]),
    (["attack", "--rounds", "1"], ["--rounds", ">= 2"]),
    (["attack", "--compare", "secagg"], ["--compare", "--plot"]),
    (["demo", "--rounds", "0"], ["--rounds", ">= 1"]),
    (["demo", "--users", "1"], ["--users", ">= 3"]),
    (["data", "--seed", "-2"], ["--seed", ">= 0"]),
])
def test_bad_values_are_refused_before_any_work(argv, expected, capsys, no_work):
    line = _refused(capsys, argv, *expected)
    assert line.startswith(f"fedmf {argv[0]}: error:")


@pytest.mark.parametrize("extra, expected", [
    (["--policy", "audit"], "--policy needs --mask personalized"),
    (["--policy", "audit", "--participants", "3"], "--policy, --participants need --mask personalized"),
    (["--mask-noise", "0.1"], "--mask-noise needs --mask personalized"),
])
def test_mask_options_without_the_masked_protocol_are_errors(extra, expected, capsys, no_work):
    _refused(capsys, ["train", *extra], expected)


@pytest.mark.parametrize("extra, expected", [
    (["--policy", "audit", "--min-fitted", "12"], "--min-fitted applies only with --policy count"),
    (["--policy", "count", "--audit-metric", "exact"], "--audit-metric applies only with --policy audit"),
    (["--compare-encrypt-all", "1"], "--compare-encrypt-all applies only with a --policy other than none"),
    (["--selective-noise"], "--selective-noise applies only with --mask-noise > 0"),
    (["--mask-alpha", "5"], "--mask-alpha applies only with --mask-model ridge"),
])
def test_masked_options_only_where_they_apply(extra, expected, capsys, no_work):
    _refused(capsys, [*MASKED, *extra], expected)


def test_ridge_masks_need_a_dataset_with_public_features(capsys, no_work):
    _refused(capsys, ["train", "--dataset", "synthetic", "--mask", "personalized"], "--mask-model ridge", "genres")


@pytest.mark.parametrize("command", ["train", "attack"])
def test_output_paths_are_checked_before_the_run(command, tmp_path, capsys, no_work):
    _refused(capsys, [command, "--json", "/proc/x.json"], "--json", "cannot write")
    missing = tmp_path / "missing" / "dir" / "x.json"
    _refused(capsys, [command, "--json", str(missing)], "--json", "does not exist")
    assert not (tmp_path / "missing").exists(), "no folder is created"
    _refused(capsys, [command, "--json", str(tmp_path)], "is a folder")


def test_a_checked_output_path_leaves_no_file_behind(tmp_path, capsys, no_work):
    out = tmp_path / "x.json"
    _refused(capsys, ["train", "--json", str(out), "--rounds", "0"], "--rounds")
    assert not out.exists()


def test_plot_without_matplotlib_is_refused_before_the_run(monkeypatch, tmp_path, capsys, no_work):
    import fedmf.commands.options as options

    real = options.importlib.util.find_spec
    monkeypatch.setattr(options.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    _refused(capsys, ["attack", "--plot", str(tmp_path / "p.png")], "--plot", "matplotlib")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_the_defaults(command, capsys):
    assert main([command, "--help"]) == 0
    assert "(default: " in capsys.readouterr().out


def test_version_comes_from_the_one_version_source(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fedmf {fedmf.__version__}"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "fedmf.__version__"' in pyproject
    assert "\nversion = " not in pyproject.split("[project]")[1].split("[")[0]


def test_the_installed_entry_point_exits_2_with_one_line():
    """The real process: exit status and stderr as a shell sees them."""
    run = subprocess.run([sys.executable, "-m", "fedmf.cli", "demo", "--users", "1"], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "fedmf demo: error: argument --users: must be >= 3, got 1 (see fedmf demo --help)"]


def test_fedmf_never_imports_attacks_at_module_level():
    """attacks imports fedmf; fedmf imports attacks only inside CLI functions (no cycle)."""
    for path in sorted((REPO / "fedmf").rglob("*.py")):
        tree = ast.parse(path.read_text())
        in_commands = path.parent.name == "commands"
        nodes = tree.body if in_commands else list(ast.walk(tree))
        for node in nodes:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "attacks" or n.startswith("attacks.") for n in names), \
                f"{path.relative_to(REPO)} imports attacks" + ("" if in_commands else " (outside the CLI)")


@pytest.mark.parametrize("model", ["fcf", "pfedrec"])
def test_item_set_attack_recovers_every_item_set_from_plain_uploads(model, tmp_path, capsys):
    """fedmf attack --model M: the last round's plain uploads give each user's item set."""
    out = tmp_path / "attack.json"
    assert main(["attack", "--model", model, "--backend", "plain", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == model and report["dataset"] == "synthetic"
    assert min(report["precision"], report["recall"]) >= 0.99
    baseline = report["baseline"]["precision"] if model == "fcf" else report["baseline_precision"]
    assert baseline < 0.5


@pytest.mark.parametrize("args", [["--model", "fcf", "--users", "3"], ["--model", "pfedrec", "--clients", "4"],
                                  ["--model", "personalfr", "--split", "u2"]])
def test_item_set_attacks_refuse_options_of_other_models(args, capsys, no_work):
    assert main(["attack", *args]) == 2
    assert "applies to --model" in capsys.readouterr().err


@pytest.mark.parametrize("args", [
    ["--model", "fedmf", "--no-baseline"],
    ["--model", "fcf", "--centralized-iterations", "0", "--participation", "0.5"],
    ["--model", "pfedrec", "--participation", "0.02"],
    ["--model", "personalfr", "--participation", "0.02"],
])
def test_train_progress_bar_advances_per_client_to_its_total(args, monkeypatch, tmp_path, capsys):
    """On a terminal, fedmf train draws one bar over rounds x participants that ends at its
    total; the per-round lines go to stdout; --no-progress (or no terminal) draws none."""
    import fedmf.progress

    monkeypatch.setattr(fedmf.progress, "stderr_is_terminal", lambda: True)
    hooked = []
    original = fedmf.progress.ClientProgress.client_done
    monkeypatch.setattr(fedmf.progress.ClientProgress, "client_done",
                        lambda self, cid: (hooked.append(cid), original(self, cid)))
    out = tmp_path / "train.json"
    assert main(["train", *args, "--rounds", "2", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    history = json.loads(out.read_text())["history"]
    total = sum(r["participants"] for r in history)
    assert len(history) == 2 and total >= 2
    assert len(hooked) == total, "the bar advanced once per client upload (the backend's hook)"
    assert f"{total}/{total} " in captured.err, captured.err[-300:]
    assert "clients" in captured.err and "<" in captured.err, "the bar shows its ETA"
    assert sum(line.startswith("round ") for line in captured.out.splitlines()) == 2
    assert main(["train", *args, "--rounds", "1", "--no-progress"]) == 0
    assert "/" not in capsys.readouterr().err
