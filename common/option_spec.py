"""One config key's declaration: :class:`Option`, the row type of the option tables.

The tables themselves are in :mod:`tunnelpy.common.options` (and, for nostr mode,
:mod:`tunnelpy.common.options_nostr`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tunnelpy.common.modes import Mode

Kind = Literal["str", "path", "int", "float", "bool", "list", "secret"]


@dataclass(frozen=True, slots=True)
class Option:
    """One config key: its YAML ``key``, its CLI ``flag``, its ``help`` and its ``default``.

    ``kind`` says how the CLI parses the flag and what type a YAML value must have; a
    relative ``path`` in a YAML file is taken relative to that file's folder. ``modes`` are
    the modes the key applies to; in any other mode the key is refused. Every number has
    finite inclusive ``bounds`` (shown in --help, checked after flags and YAML are merged).
    """

    key: str
    flag: str
    help: str
    kind: Kind = "str"
    default: Any = None
    metavar: str | None = None
    modes: tuple[Mode, ...] = tuple(Mode)
    bounds: tuple[float, float] | None = None
    aliases: tuple[str, ...] = ()  # more flags for the same key (``--target`` and ``-t`` for ``--listen``)
    key_aliases: tuple[str, ...] = ()  # more YAML keys for the same key (``target`` for ``listen``)
    scalar_ok: bool = False  # a "list" key whose YAML value may also be one string (``node_id: ID``)

    @property
    def help_text(self) -> str:
        """The help line with the default and, for numbers, the accepted range."""
        extra = self.extras()
        return f"{self.help} ({extra})" if extra else self.help

    def extras(self) -> str:
        """The default and, for numbers, the accepted range (empty if neither)."""
        extra = [] if self.default in (None, (), False) else [f"default: {self.default}"]
        if self.bounds:
            extra.append(f"{_num(self.bounds[0])} to {_num(self.bounds[1])}")
        return "; ".join(extra)

    def modes_text(self) -> str:
        return ", ".join(self.modes)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
