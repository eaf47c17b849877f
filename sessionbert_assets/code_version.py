"""An asset's code version: a digest of its function and of everything of this project that function reaches.

Dagster reads a changed `code_version` as "this asset's result may have changed". A digest of the asset's
own function misses a change in the core function it calls (where the work is), so the digest here follows
the names the function uses: each function, class and module-level value of `sessionbert_core` or
`sessionbert_assets` it names, directly, through a module (`storage.write_parquet`) or an import inside its
body, and then what those name in turn. A change anywhere on that path changes the version; a change in
code the asset cannot reach (another asset, an unused helper of the same module) does not. It is a digest
of source, so a comment or a metadata label on the path changes it too: it errs toward "changed".
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import types

PROJECT = ("sessionbert_core", "sessionbert_assets")  # the packages whose code is followed


def code_version(function) -> str:
    """Twelve hex digits of the sources `function` reaches (see the module docstring)."""
    sources: dict[str, str] = {}
    _reach(function, sources)
    digest = hashlib.sha256()
    for key in sorted(sources):
        digest.update(key.encode() + b"\0" + sources[key].encode() + b"\0")
    return digest.hexdigest()[:12]


def _ours(value, packages: tuple[str, ...] | None = None) -> bool:
    name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
    return isinstance(name, str) and name.split(".")[0] in (packages or PROJECT)


def _reach(value, sources: dict[str, str]) -> None:
    key = f"{getattr(value, '__module__', '')}:{getattr(value, '__qualname__', repr(value))}"
    if key in sources:
        return
    sources[key] = _source_of(key, value)
    if inspect.isclass(value):
        for member in vars(value).values():
            member = getattr(member, "__func__", getattr(member, "fget", member))  # static/class methods, properties
            if inspect.isfunction(member):
                _follow(member, sources)
    elif inspect.isfunction(value):
        _follow(value, sources)


@functools.cache
def _source_of(key: str, value) -> str:
    """`value`'s source (a function or class: hashable), read once per process: every asset reaches the same
    helpers."""
    try:
        return inspect.getsource(value)
    except (OSError, TypeError):
        return key


def _follow(function: types.FunctionType, sources: dict[str, str]) -> None:
    """Everything of this project that `function`'s names point at (globals, module attributes, imports)."""
    names = _names(function.__code__)
    modules = [m for n in names if "." in n and n.split(".")[0] in PROJECT if (m := _module(n))]  # body imports
    for name in names:
        value = function.__globals__.get(name)
        if inspect.ismodule(value):
            modules.append(value)
        elif value is not None:
            _take(f"{function.__module__}.{name}", value, sources)
    seen = set()
    while modules:  # a module's attributes the function names; a module among them (`from pkg import module`) too
        module = modules.pop()
        if module.__name__ in seen or not _ours(module):
            continue
        seen.add(module.__name__)
        for name in names & set(vars(module)):
            value = vars(module)[name]
            if inspect.ismodule(value):
                modules.append(value)
            else:
                _take(f"{module.__name__}.{name}", value, sources)


def _module(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:  # an optional part (Spark) not installed: nothing of it runs either
        return None


def _take(where: str, value, sources: dict[str, str]) -> None:
    value = inspect.unwrap(value) if callable(value) and hasattr(value, "__wrapped__") else value  # decorated
    if inspect.isfunction(value) or inspect.isclass(value):
        if _ours(value):
            _reach(value, sources)
        return
    if where.split(".")[0] not in PROJECT or callable(value) or inspect.ismodule(value):
        return
    for item in value.values() if type(value) is dict else value if type(value) in (list, tuple) else ():
        if (inspect.isfunction(item) or inspect.isclass(item)) and _ours(item):  # a table of functions
            _reach(item, sources)
    text = repr(sorted(map(repr, value))) if isinstance(value, set | frozenset) else repr(value)  # sets: any order
    if "0x" not in text:  # a module-level setting (a threshold, a schema), not an object's address
        sources.setdefault(where, text)


def _names(code: types.CodeType) -> set[str]:
    """The global and attribute names a code object and the code nested in it use."""
    found = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found |= _names(constant)
    return found
