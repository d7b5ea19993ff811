"""The README's commands and example stay true."""

from __future__ import annotations

import os
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


def test_distributed_doc_examples_run_in_a_world_of_one(tmp_path):
    """docs/distributed.md's two examples, under torchrun's environment for one process."""
    import socket

    blocks = re.findall(
        r"```python\n(.*?)```", (ROOT / "docs" / "distributed.md").read_text(), flags=re.S
    )
    assert len(blocks) == 2, len(blocks)
    setup = (
        "import torch\n"
        "class DualEncoder(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)\n"
        "    def forward(self, x, y):\n"
        "        return self.a(x), self.b(y)\n"
        "loader = [(torch.randn(3, 6), torch.randn(3, 5)) for _ in range(2)]\n"
    )
    between = "img, txt = model(*loader[0])\nfrozen = torch.randn(3, 4)\n"
    script = tmp_path / "train.py"
    script.write_text(
        setup + blocks[0] + between + blocks[1] + "assert loss.ndim == 0\n"
        "cdist.destroy_process_group()\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "CUDA_VISIBLE_DEVICES": "",
    }
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # and as a plain `python train.py`, as the page promises: no torchrun environment at all
    plain = {k: v for k, v in env.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    plain = {k: v for k, v in plain.items() if not k.startswith("MASTER_")}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=plain, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
