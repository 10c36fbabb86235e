"""The working parts of a cache entry (:class:`~gateway.store.cache.CacheEntry`): its *shape*
(what it keeps besides its value and ``fresh_until``), what it computes when read
(``stale_until``, ``owner``), and making one from its parts (:mod:`gateway.store.cache`'s
docstring, "Memory").

The entries' own module is not compiled (``gateway/compiled.py`` says why), so everything an
entry runs there is interpreted, even when compiled code asks: a property read, ``in_tier``,
making one. The request path does that from compiled modules on every L2 hit (the Redis
tier's decoding makes both entries, the L1 tier copies both in and reads their ends), so that
work is here, where the compiled build compiles it, and the entries' own methods call it too:
each rule is written once.

Making an entry from compiled code: mypyc refuses ``object.__new__`` on a class it does not
compile, so :func:`made` calls it through a name it does not know, on the two entry classes
:mod:`gateway.store.cache` registers when it is imported (:func:`register_classes`), and sets
the frozen entries' slots through their descriptors (what ``object.__setattr__`` would end in).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from gateway.store.cache import CacheEntry

__all__ = [
    "OWNED_BY_VALUE",
    "SESSIONS_PREFIX",
    "OwnedByValue",
    "Shape",
    "in_tier",
    "made",
    "owner_of",
    "register_classes",
    "shape",
    "stale_until_of",
    "utc_entry",
]

T = TypeVar("T")

SESSIONS_PREFIX = "sessions-of:"
"""The owner scopes of session validations: ``sessions-of:<customer id>``."""


class OwnedByValue:
    """The owner code of an entry whose owner is the sessions scope of its own value."""

    __slots__ = ()


OWNED_BY_VALUE = OwnedByValue()
"""The owner code of every session validation (its value's sessions scope)."""

Shape = tuple[object, ...]
"""What an entry keeps besides its value and ``fresh_until``, a pair: ``stale_until`` (as its
distance from ``fresh_until`` when that is exact, else itself) and the owner's code (a str,
:data:`OWNED_BY_VALUE` or None). Typed as a tuple of any length on purpose: mypyc keeps a
fixed-size tuple unboxed and makes a new one whenever it hands one on, and shapes are shared
by identity."""

_SHAPES: dict[Shape, Shape] = {}
"""The shared shapes: a handful in practice, at most :data:`_MAX_SHAPES`; a memo, so a race
only makes a second copy of one."""
_MAX_SHAPES = 64


def shape(value: object, fresh_until: datetime, stale_until: datetime, owner: str | None) -> Shape:
    """The shape of an entry of these fields, shared with other entries' when it can be."""
    code = _owner_code(value, owner)
    try:
        distance = stale_until - fresh_until
        again = fresh_until + distance
        # Exact only if the very same datetime comes back: aware datetimes with one zoneinfo
        # subtract and add by wall clock, and ``fold`` is not compared by ``==``.
        exact = (
            again == stale_until
            and again.tzinfo is stale_until.tzinfo
            and again.fold == stale_until.fold
        )
    except (TypeError, OverflowError):  # naive against aware, or at the edge of the range
        exact = False
    if not exact:
        return (stale_until, code)
    return _shared((distance, code))


def _owner_code(value: object, owner: str | None) -> str | OwnedByValue | None:
    if owner is not None and isinstance(value, str) and owner == SESSIONS_PREFIX + value:
        return OWNED_BY_VALUE
    return owner


def _shared(key: Shape) -> Shape:
    """The shared copy of an exact shape (a distance), unless its owner is one of its own."""
    if isinstance(key[1], str):
        return key  # one of its own: owner strings are not worth sharing
    found = _SHAPES.get(key)
    if found is None:
        found = key
        if len(_SHAPES) < _MAX_SHAPES:
            _SHAPES[key] = key
    return found


def stale_until_of(entry: CacheEntry[Any]) -> datetime:
    """:attr:`CacheEntry.stale_until <gateway.store.cache.CacheEntry.stale_until>`."""
    stale = entry._shape[0]
    return entry.fresh_until + stale if isinstance(stale, timedelta) else cast(datetime, stale)


def owner_of(entry: CacheEntry[Any]) -> str | None:
    """:attr:`CacheEntry.owner <gateway.store.cache.CacheEntry.owner>`."""
    code = entry._shape[1]
    if isinstance(code, OwnedByValue):
        return SESSIONS_PREFIX + cast(str, entry.value)
    return cast("str | None", code)


# object.__new__ under a name mypyc does not recognise (module docstring).
_new: Any = object.__new__
# The entry classes: for ``l1`` (its tier a class attribute), and for the other tiers.
_classes: tuple[Any, Any] | None = None
# The setters of the entries' slots (their member descriptors' ``__set__``, bound once): the
# entries are frozen, and this is what ``object.__setattr__`` ends in, without looking the
# name up on the class each time (about 60 against 25 ns a field).
_setters: tuple[Any, Any, Any, Any] | None = None


def register_classes(l1: type[CacheEntry[Any]], other: type[CacheEntry[Any]]) -> None:
    """The entry classes :func:`made` makes: ``l1``'s, and the one with a ``tier`` slot."""
    global _classes, _setters
    slots = (
        _slot(l1, "value"),
        _slot(l1, "fresh_until"),
        _slot(l1, "_shape"),
        _slot(other, "tier"),
    )
    _classes = (l1, other)
    _setters = slots


def _slot(cls: type[Any], name: str) -> Any:
    """The setter of slot ``name`` of ``cls`` (one of its own or a base's)."""
    for klass in cls.__mro__:
        found = vars(klass).get(name)
        if found is not None:
            return found.__set__
    raise TypeError(f"{cls.__name__} has no slot {name!r}")


def made(value: T, fresh_until: datetime, entry_shape: Shape, tier: str) -> CacheEntry[T]:
    """The entry of these parts, its shape as it is (``CacheEntry.__init__`` computes one)."""
    classes, setters = _classes, _setters
    if classes is None or setters is None:
        raise RuntimeError("gateway.store.cache registers the entry classes when imported")
    set_value, set_fresh_until, set_shape, set_tier = setters
    entry = _new(classes[0] if tier == "l1" else classes[1])
    set_value(entry, value)
    set_fresh_until(entry, fresh_until)
    set_shape(entry, entry_shape)
    if tier != "l1":
        set_tier(entry, tier)
    return cast("CacheEntry[T]", entry)


def in_tier(entry: CacheEntry[T], tier: str) -> CacheEntry[T]:
    """:meth:`CacheEntry.in_tier <gateway.store.cache.CacheEntry.in_tier>`."""
    return made(entry.value, entry.fresh_until, entry._shape, tier)


def utc_entry(
    value: T, fresh_until: datetime, lifetime: timedelta, tier: str, owner: str | None
) -> CacheEntry[T]:
    """``CacheEntry(value, fresh_until, fresh_until + lifetime, tier, owner)``, equal and of the
    same shape, for a ``fresh_until`` in UTC (:data:`datetime.UTC` itself) whose ``fresh_until
    + lifetime`` is a datetime too: there adding the lifetime gives back the very same instant,
    so the shape is the lifetime itself, without making ``stale_until`` to compute it (for the
    Redis tier's decoding, whose instants are numbers: :mod:`gateway.store.codec`)."""
    return made(value, fresh_until, _shared((lifetime, _owner_code(value, owner))), tier)
