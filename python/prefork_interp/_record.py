"""Plain value classes, without ``dataclasses``.

The protocol's values (``_protocol``) are made on the cold path, in the
setup process running the first call in place, where every module imported
adds to the call's time; ``dataclasses`` alone pulls in ``inspect``,
``ast``, ``dis``, ``tokenize``, ``re`` and ``typing``.  So a value class
is a :class:`Record`: it names its fields in ``__slots__`` and sets them in
its own ``__init__``, and gets from here what a dataclass would give it.
"""

__all__ = ["Record"]

TYPE_CHECKING = False  # not typing's: importing typing costs a cold call
if TYPE_CHECKING:
    from typing import Tuple


class Record:
    """A value made of the attributes its class names in ``__slots__``:
    equal to another of the same class whose attributes are equal,
    hashable when they are, and shown as ``Name(field=value, ...)``.
    Treated as immutable: nothing sets an attribute after ``__init__``."""

    __slots__: "Tuple[str, ...]" = ()

    def _values(self) -> "Tuple[object, ...]":
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self) or not isinstance(other, Record):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
