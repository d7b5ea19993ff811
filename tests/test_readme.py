"""The README's commands and example stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    readme = _readme()
    commands = re.findall(r"^    (pip install .*)$", readme, flags=re.M)
    assert len(commands) == 2, commands
    test_command = commands[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_readme_example_runs():
    code = re.search(r"```python\n(.*?)```", _readme(), flags=re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["loss"].ndim == 0


def test_main_job_command_runs(tmp_path):
    main_job = re.findall(r"^    (pip install .*)$", _readme(), flags=re.M)[0]
    assert main_job.endswith("&& contrastkit train")
    # the same command on a reduced budget (the full run is benchmarks/bench_cli_train.py)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "contrastkit.cli",
            "train",
            "--max-steps",
            "2",
            "--width",
            "8",
            "--threads",
            "1",
            "--progress",
            "none",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "kNN accuracy (k=5)" in out.stdout and "raw input" in out.stdout
    assert (tmp_path / "run" / "metrics.json").is_file()
