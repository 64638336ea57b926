"""Quality gates that run with the tests: ruff, mypy (strict on core), import cost, README/CI agreement."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff not installed")
def test_ruff_clean() -> None:
    res = _run(sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_clean() -> None:
    pytest.importorskip("mypy")
    res = _run(sys.executable, "-m", "mypy", "--no-error-summary", "src/tensorpress")
    assert res.returncode == 0, res.stdout + res.stderr


def test_import_is_light() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import tensorpress, tensorpress.core; "
        "dt = time.perf_counter() - t; heavy = [m for m in ('torch', 'zarr', 'numba', 'skimage') if m in sys.modules]; "
        "print(dt, heavy)"
    )
    res = _run(sys.executable, "-c", code)
    dt, heavy = res.stdout.split(" ", 1)
    assert heavy.strip() == "[]", f"import tensorpress pulled in {heavy}"
    assert float(dt) < 1.0


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash")[1:]]
    assert len(blocks) == 2, "the README shows exactly two shell commands"
    demo, tests = blocks
    assert "tensorpress demo" in demo
    install, run = tests.rsplit(" && ", 1)
    assert run == "python -m pytest" and f"\n{run}\n" in ci
    for step in install.split(" && "):
        assert step.replace("pip install", "pip install -q") in ci or step in ci, step
