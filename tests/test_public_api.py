"""Every public function and class (the ``__all__`` of every module) has a docstring with an
example (``>>>``, run by pytest's doctest collection), and full type hints on its signature."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import contrastkit

SKIP = ("contrastkit.cli", "contrastkit.__main__", "contrastkit.engine.fused_kernels")


def _public() -> dict[str, object]:
    names = ["contrastkit"] + [
        m.name
        for m in pkgutil.walk_packages(contrastkit.__path__, "contrastkit.")
        if not m.name.startswith(SKIP)
    ]
    out: dict[str, object] = {}
    for module_name in names:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj not in out.values():
                out[f"{module_name}.{name}"] = obj
    return out


def test_the_public_surface_is_large_enough_to_mean_something():
    assert len(_public()) > 200


def test_every_public_function_and_class_has_an_example():
    missing = [name for name, obj in _public().items() if ">>>" not in (inspect.getdoc(obj) or "")]
    assert not missing, f"no docstring example: {missing}"


def test_every_public_signature_is_type_annotated():
    problems = []
    for name, obj in _public().items():
        functions = [(name, obj)] if inspect.isfunction(obj) else []
        if inspect.isclass(obj):
            functions = [
                (f"{name}.{m}", obj.__dict__[m])
                for m in ("__init__", "forward", "__call__")
                if inspect.isfunction(obj.__dict__.get(m))
            ]
        for where, fn in functions:
            sig = inspect.signature(fn)
            for p in sig.parameters.values():
                if p.name in ("self", "cls") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                if p.annotation is inspect.Parameter.empty:
                    problems.append(f"{where}: argument {p.name!r}")
            if sig.return_annotation is inspect.Signature.empty:
                problems.append(f"{where}: return")
    assert not problems, "missing type hints: " + "; ".join(problems)
