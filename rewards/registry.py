"""The reward registry and the loader for user rewards.

- :func:`register` adds a built-in or user reward under a name (duplicates refused).
- :func:`get` returns a registered reward; :func:`names` lists them.
- :func:`load` resolves what a config names: a registry name,
  ``package.module:function`` or ``path/to/file.py:function``.

Every callable returned carries a meaningful ``__name__`` (TRL logs each
reward under it): the registry name for built-ins, the function's own name for
plugins (a callable object without ``__name__`` is named after the spec).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

RewardFunc = Callable[..., list]
"""``reward(completions, **columns) -> list[float | None]``."""
F = TypeVar("F", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}


class RewardLoadError(ValueError):
    """A reward name or spec that cannot be resolved to a callable."""


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine: an ``async def`` (or a partial of one) or an object
    whose ``__call__`` is ``async`` (TRL's ``is_async_callable`` test; TRL awaits those rewards).

    >>> async def scored(completions, **columns):
    ...     return [1.0] * len(completions)
    >>> is_async(scored), is_async(NamedReward(scored, "n")), is_async(len)
    (True, True, False)
    """
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def register(name: str) -> Callable[[F], F]:
    """Decorator registering a reward under ``name`` and setting its ``__name__`` to it.

    >>> @register("always_one")
    ... def my_reward(completions, **columns):
    ...     return [1.0] * len(completions)
    >>> get("always_one").__name__
    'always_one'
    >>> _ = _REGISTRY.pop("always_one")
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")

    def decorator(fn: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"reward {name!r} is already registered ({_REGISTRY[name]!r})")
        if not callable(fn):
            raise TypeError(f"cannot register {fn!r} as reward {name!r}: not callable")
        fn.__name__ = name  # __qualname__ is kept, so functions stay picklable
        _REGISTRY[name] = fn
        return fn

    return decorator


def names() -> list[str]:
    """The registered reward names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> RewardFunc:
    """The reward registered as ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise RewardLoadError(f"unknown reward {name!r}; known rewards: {', '.join(names())}") from None


def load(spec: str) -> RewardFunc:
    """Resolve a reward spec: a registry name, ``package.module:function`` or
    ``path/to/file.py:function`` (relative paths from the working directory).

    Raises :class:`RewardLoadError` when the name, module, file or function is
    missing, the import fails, or the object is not callable.

    >>> load("iou").__name__, load("rewards.examples.colour_match:colour_match").__name__
    ('iou', 'colour_match')
    """
    if not isinstance(spec, str) or not spec.strip():
        raise RewardLoadError(f"reward spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if ":" not in spec:
        return get(spec)
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise RewardLoadError(
            f"bad reward spec {spec!r}; expected a registry name, 'package.module:function' "
            "or 'path/to/file.py:function'"
        )
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    module = _load_file(target) if is_file else _import(target)
    if not hasattr(module, attr):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise RewardLoadError(f"{target} has no function {attr!r}; callables there: {', '.join(found) or 'none'}")
    obj = getattr(module, attr)
    if not callable(obj):
        raise RewardLoadError(f"{spec} is a {type(obj).__name__}, not a callable reward")
    if not isinstance(getattr(obj, "__name__", None), str):
        obj = NamedReward(obj, attr)  # a callable object: name it after the spec (async stays async)
    return obj


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise RewardLoadError(f"no module named {module_name!r} (from reward spec)") from exc
        raise RewardLoadError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise RewardLoadError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc


def _load_file(path_text: str) -> Any:
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise RewardLoadError(f"reward file {path_text!r} not found (resolved to {path})")
    # One module per file, reused, so two rewards from the same file share state.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"_reward_plugin_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise RewardLoadError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise RewardLoadError(f"loading {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


class NamedReward:
    """A callable object given the ``__name__`` it lacks; ``NamedReward(async_obj, name)`` is an
    :class:`AsyncNamedReward`, so TRL and :func:`rewards.guard` still see a coroutine function."""

    def __new__(cls, fn: Callable[..., Any] | None = None, name: str | None = None):
        # Defaults so that unpickling, which calls cls.__new__(cls), works.
        if cls is NamedReward and fn is not None and is_async(fn):
            cls = AsyncNamedReward
        return super().__new__(cls)

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.__name__ = name
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"NamedReward({self.fn!r}, {self.__name__!r})"


class AsyncNamedReward(NamedReward):
    """:class:`NamedReward` of an ``async`` callable object."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return await self.fn(*args, **kwargs)
