"""Forwarding: a factory method that takes exactly its constructor's parameters.

``HiveBoard.agent(...)`` passes its arguments on to ``Agent(client, ...)``. Writing the eight
parameters twice would let the two lists drift; :func:`parameters_of` makes the constructor
the one definition, for type checkers (through a ``ParamSpec``) and for ``inspect.signature``
and ``help()`` alike, so callers see the same signature as if it had been written out.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

_P = ParamSpec("_P")
_Q = ParamSpec("_Q")
_S = TypeVar("_S")
_R = TypeVar("_R")


def parameters_of(
    constructor: Callable[Concatenate[Any, Any, _P], object],
) -> Callable[[Callable[Concatenate[_S, _Q], _R]], Callable[Concatenate[_S, _P], _R]]:
    """Decorator: the method takes ``constructor``'s parameters after its first two.

    ``constructor`` is an ``__init__(self, owner, ...)``; the decorated method is written as
    ``def method(self, *args, **kwargs)`` and passes them on as ``Cls(self, *args, **kwargs)``.
    Type checkers see ``(self, ...)`` with the constructor's parameters; at run time the
    method gets a ``__signature__`` and ``__annotations__`` built the same way (with its own
    ``self`` and return annotation). The method is returned as it is, with no wrapper, so a
    call costs nothing more. Runs once, at import time; raises nothing.
    """

    def apply(method: Callable[Concatenate[_S, _Q], _R]) -> Callable[Concatenate[_S, _P], _R]:
        own = inspect.signature(method)
        forwarded = list(inspect.signature(constructor).parameters.values())[2:]
        self_param = next(iter(own.parameters.values()))
        method.__signature__ = own.replace(  # type: ignore[attr-defined]
            parameters=[self_param, *forwarded]
        )
        method.__annotations__ = {
            **{p.name: p.annotation for p in forwarded if p.annotation is not p.empty},
            "return": own.return_annotation,
        }
        return cast("Callable[Concatenate[_S, _P], _R]", method)

    return apply
