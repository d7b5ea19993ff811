"""docs/papers.md has one entry per paper of the field, and each names real code and a real test."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "papers.md"
NUM_PAPERS = 119
# Issues that have not landed yet: an entry may say "Missing: ... issue N" only for these.
PENDING_ISSUES: set[int] = set()

ENTRY = re.compile(r"^## (\d+)\. (.+)$", re.M)


def _entries() -> dict[int, str]:
    text = DOC.read_text()
    heads = list(ENTRY.finditer(text))
    out: dict[int, str] = {}
    for h, nxt in zip(heads, heads[1:] + [None], strict=True):
        body = text[h.end() : nxt.start() if nxt else len(text)]
        n = int(h.group(1))
        assert n not in out, f"paper {n} has two entries"
        out[n] = body
    return out


def test_every_paper_has_an_entry():
    numbers = set(_entries())
    missing = set(range(1, NUM_PAPERS + 1)) - numbers
    extra = numbers - set(range(1, NUM_PAPERS + 1))
    assert not missing, f"docs/papers.md lacks entries for papers {sorted(missing)}"
    assert not extra, f"docs/papers.md has entries for unknown papers {sorted(extra)}"


def _resolve(node: ast.AST, names: dict) -> None:
    """Resolve ``a.b.c`` chains rooted at an imported module or contrastkit object."""
    chain = []
    while isinstance(node, ast.Attribute):
        chain.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in names:
        return
    obj = names[node.id]
    for attr in reversed(chain):
        if not hasattr(obj, attr):
            mod = getattr(obj, "__name__", type(obj).__name__)
            # a submodule that is not imported yet
            try:
                obj = importlib.import_module(f"{mod}.{attr}")
                continue
            except ImportError:
                raise AssertionError(
                    f"{node.id}.{'.'.join(reversed(chain))}: no {attr!r}"
                ) from None
        obj = getattr(obj, attr)
        if not (getattr(obj, "__module__", "") or getattr(obj, "__name__", "")).startswith(
            ("contrastkit", "torch")
        ) and not isinstance(obj, type(importlib)):
            return


def test_entries_name_existing_code_and_tests():
    problems = []
    for n, body in sorted(_entries().items()):
        assert re.search(r"^Groups: \S", body, re.M), f"{n}: no Groups: line"
        missing = re.search(r"^Missing: (.*)$", body, re.M)
        if missing:
            issues = {int(i) for i in re.findall(r"issues? (\d+)", missing.group(1))}
            issues |= {int(i) for i in re.findall(r"and (\d+)", missing.group(1))}
            if not issues or not issues <= PENDING_ISSUES:
                problems.append(f"{n}: says Missing ({missing.group(1)}) but that has landed")
            continue
        codes = re.findall(r"```python\n(.*?)```", body, re.S)
        tests = re.findall(r"^Test: `(tests/[\w/]+\.py)::(\w+)`", body, re.M)
        if not codes or not tests:
            problems.append(f"{n}: needs a ```python block and a Test: line")
            continue
        for file, name in tests:
            path = ROOT / file
            if not path.exists() or not re.search(rf"^def {name}\(", path.read_text(), re.M):
                problems.append(f"{n}: test {file}::{name} does not exist")
        for code in codes:
            tree = ast.parse(code)
            names: dict = {}
            for stmt in tree.body:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    try:
                        exec(compile(ast.Module([stmt], []), f"paper {n}", "exec"), names)
                    except ImportError as e:
                        problems.append(f"{n}: {e}")
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute):
                    try:
                        _resolve(node, names)
                    except AssertionError as e:
                        problems.append(f"{n}: {e}")
                if isinstance(node, ast.Call):
                    problems += [f"{n}: {p}" for p in _unknown_keywords(node, names)]
    assert not problems, "\n".join(problems)


def _callee(node: ast.AST, names: dict):
    """The contrastkit object an ``a.b.c`` / ``name`` expression names, else None."""
    chain = []
    while isinstance(node, ast.Attribute):
        chain.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in names:
        return None
    obj = names[node.id]
    for attr in reversed(chain):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj if getattr(obj, "__module__", "").startswith("contrastkit") else None


def _unknown_keywords(call: ast.Call, names: dict) -> list[str]:
    """Keyword arguments of a call to contrastkit code that its signature does not take."""
    import inspect

    obj = _callee(call.func, names)
    if obj is None or not callable(obj):
        return []
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    bad = [kw.arg for kw in call.keywords if kw.arg is not None and kw.arg not in params]
    name = getattr(obj, "__qualname__", repr(obj))
    return [f"{name}() takes no keyword {b!r}" for b in bad]


def test_keyword_check_catches_a_wrong_argument_name():
    import contrastkit.functional as F

    names = {"F": F}
    good = ast.parse("F.info_nce(q, k, temperature=0.1)").body[0].value
    bad = ast.parse("F.info_nce(q, k, temprature=0.1)").body[0].value
    assert _unknown_keywords(good, names) == []
    assert _unknown_keywords(bad, names) == ["info_nce() takes no keyword 'temprature'"]


# -- docs/losses.md: the map of contrastkit.losses -----------------------------------------------
LOSSES_DOC = ROOT / "docs" / "losses.md"
ROW = re.compile(r"^\| `([A-Za-z0-9]+)(?:\(.*?\))?` \| (.+?) \|", re.M)


def test_losses_doc_lists_every_loss_module_once_with_its_real_arguments():
    import inspect

    import contrastkit.losses as L

    rows: dict[str, str] = {}
    for m in ROW.finditer(LOSSES_DOC.read_text()):
        name, inputs = m.group(1), m.group(2)
        if name in rows:
            raise AssertionError(f"docs/losses.md lists {name} twice")
        rows[name] = inputs
    missing, unknown = set(L.__all__) - set(rows), set(rows) - set(L.__all__)
    assert not missing and not unknown, f"missing: {sorted(missing)}, unknown: {sorted(unknown)}"
    for name, inputs in rows.items():  # every argument named in the inputs column is real
        params = set(inspect.signature(getattr(L, name).forward).parameters) - {"self"}
        named = set(re.findall(r"`\*?([a-z_][a-z0-9_]*)", inputs))
        if "views" in params or name in {"WeightedSum", "MinNormBalancer"}:
            continue
        assert named <= params, f"{name}: docs/losses.md names {sorted(named - params)}"
