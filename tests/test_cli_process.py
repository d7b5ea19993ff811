"""The ``contrastkit`` command as separate processes: two gloo processes under torchrun give the
one-process training on the global batch, and Ctrl-C leaves a checkpoint that --resume takes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

FAST = "--width 8 --hidden-dim 32 --embed-dim 16 --progress none --plots false --threads 1"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _modules(folder) -> dict[str, torch.Tensor]:
    state = torch.load(folder / "checkpoint.pt", weights_only=True)["modules"]
    return {k: v for k, v in state.items() if v.is_floating_point()}


TWO_PROCESS_CASES = {
    # CLIP: InfoNCE with distributed=True and a learnable temperature (a loss parameter), two
    # towers, and gradient caching on the two-process run (caching and the distributed loss
    # compose).  GroupNorm, not the recipe's BatchNorm, whose statistics are per process.
    "clip": ("--recipe clip-digits --norm group --max-steps 2", "--grad-cache-chunk 8"),
    # MoCo with a loss that has no distributed option (the CLI gathers the global batch for it),
    # the momentum encoder and the queue shared by the processes: 48 entries wrap around within a
    # step, so the order in which the processes' keys are enqueued matters from step 2 on.
    "moco": ("--recipe moco-digits --loss FocalInfoNCE --queue-size 48 --max-steps 3", ""),
}


@pytest.mark.parametrize("case", sorted(TWO_PROCESS_CASES))
def test_two_gloo_processes_equal_one_process_on_the_global_batch(tmp_path, case):
    common, two_only = TWO_PROCESS_CASES[case]
    args = f"train {common} --batch-size 32 {FAST}".split()
    one = subprocess.run(
        [sys.executable, "-m", "contrastkit", *args, "--out", str(tmp_path / "one")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "contrastkit",
            *args,
            *two_only.split(),
            "--out",
            str(tmp_path / "two"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    record = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["steps"] == int(args[args.index("--max-steps") + 1])
    a, b = _modules(tmp_path / "one"), _modules(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    losses = [
        torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["history"]["loss"]
        for d in ("one", "two")
    ]
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-5, atol=0)


def test_ctrl_c_leaves_a_checkpoint_that_resume_continues(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "contrastkit",
        "train",
        "--epochs",
        "400",
        "--batch-size",
        "128",
        *FAST.split(),
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (out / "checkpoint.pt").exists(), proc.communicate(timeout=5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "interrupted at step" in err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    step = state["step"]
    assert step >= 10 and len(state["history"]["loss"]) == step
    assert not (out / "metrics.json").exists()
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "contrastkit",
            "train",
            "--resume",
            str(out),
            "--max-steps",
            str(step + 3),
            "--progress",
            "none",
            "--plots",
            "false",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["steps"] == step + 3
