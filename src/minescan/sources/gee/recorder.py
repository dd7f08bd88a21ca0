"""An offline stand-in for the ``ee`` module that records the expressions built with it as Python-like text.

``minescan gee plan --show-expression`` prints the composite this way without credentials or network, and
the tests compare the text exactly, e.g.::

    >>> ee = RecordingEE()
    >>> ee.ImageCollection('X').filterDate('2026-01-01', '2026-04-01').map(lambda img: img.select('B1'))
    ee.ImageCollection('X').filterDate('2026-01-01', '2026-04-01').map(lambda img: img.select('B1'))

Only expression building is recorded; ``data``, ``batch`` and ``Initialize`` are absent here (tests add
fakes of their own for those).
"""

from __future__ import annotations

from types import SimpleNamespace


class Expr:
    """A recorded Earth Engine object: any method call returns a longer recorded expression."""

    __slots__ = ("_text",)

    def __init__(self, text: str):
        self._text = text

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def method(*args, **kwargs):
            return Expr(f"{self._text}.{name}({fmt_args(args, kwargs)})")

        return method

    def __repr__(self) -> str:
        return self._text

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, Expr) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)


def fmt(value) -> str:
    if isinstance(value, Expr):
        return value._text
    if callable(value):  # a function mapped over a collection
        return f"lambda img: {fmt(value(Expr('img')))}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {fmt(v)}" for k, v in value.items()) + "}"
    return repr(value)


def fmt_args(args, kwargs) -> str:
    return ", ".join([fmt(a) for a in args] + [f"{k}={fmt(v)}" for k, v in kwargs.items()])


class _Constructor:
    """``ee.Image(...)``, ``ee.Image.constant(...)``, ``ee.Filter.lte(...)``, ``ee.Geometry.Rectangle(...)``."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        return Expr(f"{self._name}({fmt_args(args, kwargs)})")

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Constructor(f"{self._name}.{attr}")


class RecordingEE(SimpleNamespace):
    def __init__(self, **extra):
        super().__init__(**{name: _Constructor(f"ee.{name}") for name in
                            ("Image", "ImageCollection", "Filter", "Reducer", "Geometry", "Number", "List")}, **extra)
