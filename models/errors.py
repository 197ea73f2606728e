"""The base class of every error whose message is meant for the user.

A bad suite, bad data, an unknown name or an unreadable checkpoint raises a subclass of
``UserError``; ``ssmbench`` (bench/cli.py) catches this one class, prints each line of
``lines()`` as ``error: ...`` on stderr and exits with code 2, without a traceback. It lives in
``models`` because models raise such errors too (unknown names, checkpoints, text encoders) and
imports flow bench -> models -> kernels. Subclasses keep their other bases (``ValueError``,
``KeyError``) so that existing ``except`` clauses still catch them.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; ``str()`` names the file, key or path and what to do."""

    def lines(self) -> list[str]:
        """The messages to print, one per problem (several problems found together override)."""
        return [str(self)]


__all__ = ["UserError"]
