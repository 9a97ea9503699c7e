"""Every public name of the tasks package says what it takes, returns and raises."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

import convpack.tasks

ROOT = Path(__file__).resolve().parents[2]


def _public(module_name):
    module = importlib.import_module(f"convpack.tasks.{module_name}")
    return module, [(name, getattr(module, name)) for name in module.__all__]


@pytest.mark.parametrize("module_name", convpack.tasks.__all__)
def test_every_public_name_is_documented(module_name):
    module, names = _public(module_name)
    assert (module.__doc__ or "").strip()
    assert (importlib.import_module(f"tasks.{module_name}").__doc__ or "").strip()
    for name, obj in names:
        if inspect.isfunction(obj):
            doc = inspect.getdoc(obj) or ""
            assert doc, name
            if inspect.signature(obj).parameters:
                assert "Args:" in doc, name
            assert "Returns:" in doc, name
        elif inspect.isclass(obj):
            doc = inspect.getdoc(obj) or ""
            assert doc, name
            init_params = [p for p in inspect.signature(obj.__init__).parameters if p != "self"]
            if obj.__init__ is not object.__init__ and init_params and not issubclass(obj, BaseException):
                assert "Args:" in doc, name
            for attr, value in vars(obj).items():
                if attr.startswith("_") and attr not in ("__len__", "__getitem__", "__iter__"):
                    continue
                function = value.fget if isinstance(value, property) else value
                if isinstance(function, (staticmethod, classmethod)):
                    function = function.__func__
                if callable(function):
                    assert (function.__doc__ or "").strip(), f"{name}.{attr}"


def test_typed_markers_ship():
    assert (ROOT / "tasks" / "py.typed").is_file()
    assert (ROOT / "python" / "convpack" / "py.typed").is_file()
