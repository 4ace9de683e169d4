"""The names ``import grpc_serverfn`` offers: ``__all__`` is sorted, complete and resolvable,
and every public class and function in it is documented."""

from __future__ import annotations

import inspect
from typing import Any

import grpc_serverfn


def _all_key(name: str) -> tuple[int, str]:
    """isort's order: CONSTANTS, then Classes, then everything else; case-sensitive within."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


def _defined_in_package(obj: Any) -> bool:
    return (inspect.isclass(obj) or inspect.isfunction(obj)) and (
        obj.__module__ == "grpc_serverfn" or obj.__module__.startswith("grpc_serverfn.")
    )


def _own_docstring(obj: Any) -> str:
    """The object's own docstring: not inherited, not one dataclass generated from fields."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    if not isinstance(doc, str):
        return ""
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # dataclasses write "Name(field: type, ...)" when the class has no docstring
    return doc.strip()


def test___all___is_sorted() -> None:
    names = list(grpc_serverfn.__all__)
    assert names == sorted(names, key=_all_key)
    assert len(names) == len(set(names)), "a name is listed twice"


def test_every_name_in___all___resolves() -> None:
    missing = [name for name in grpc_serverfn.__all__ if not hasattr(grpc_serverfn, name)]
    assert not missing
    namespace: dict[str, Any] = {}
    exec("from grpc_serverfn import *", namespace)
    assert set(grpc_serverfn.__all__) <= set(namespace)


def test_every_public_class_and_function_of_the_package_is_in___all__() -> None:
    exported = {
        name
        for name, obj in vars(grpc_serverfn).items()
        if not name.startswith("_") and _defined_in_package(obj)
    }
    assert exported, "found no public classes or functions"
    assert sorted(exported - set(grpc_serverfn.__all__)) == []


def test_the_essentials_are_exported() -> None:
    for name in ("Registry", "Server", "Client", "AsyncClient", "ServerFnError", "serve"):
        assert name in grpc_serverfn.__all__
    assert isinstance(grpc_serverfn.__version__, str)
    assert grpc_serverfn.__version__


def test_every_public_class_and_function_in___all___has_a_docstring() -> None:
    public = {
        name: getattr(grpc_serverfn, name)
        for name in grpc_serverfn.__all__
        if inspect.isclass(getattr(grpc_serverfn, name))
        or inspect.isfunction(getattr(grpc_serverfn, name))
    }
    assert public, "found no public classes or functions"
    undocumented = sorted(name for name, obj in public.items() if not _own_docstring(obj))
    assert undocumented == []
