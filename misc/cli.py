"""Small argparse helpers shared by the entry scripts."""
from __future__ import annotations

import argparse


def bool_flag(value: str) -> bool:
    """Parse ``true/false/1/0/yes/no`` so that scripts spell booleans out (``--amp true``)."""
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def shard_spec(value: str) -> tuple[int, int]:
    """Parse ``K/N`` (1 <= K <= N): this process handles the K-th of N equal shards of the work."""
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like K/N (e.g. 2/8), got {value!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"--shard K/N needs 1 <= K <= N, got {value!r}")
    return k, n


# An argv string cannot hold a NUL byte, so no command line can spell this value.
_NOT_GIVEN = "\0not given"


def add_renamed_argument(parser, name: str, *old_names: str, required: bool = False, type=str, **kwargs):
    """Add the option ``name`` and accept each of ``old_names`` in its place, hidden from ``--help``.

    A flag that got a new name keeps working under its old one, so existing commands and scripts still run; every
    spelling parses into ``name``'s dest. ``parser`` may be a parser or an argument group.

    argparse's ``required=True`` cannot be used: it counts only the action that carries it, and each alias is a
    separate (hidden) action. A required flag instead gets a default that no command line can spell; argparse
    converts a string default still in place after parsing through ``type``, which then reports the flag missing.
    The usage line then shows the flag in brackets, so its help says that it is required.
    """
    def convert(value: str):
        if value == _NOT_GIVEN:
            raise argparse.ArgumentTypeError("is required")
        return type(value)

    convert.__name__ = getattr(type, "__name__", "value")  # argparse names the type in "invalid ... value"
    if required:
        kwargs["default"] = _NOT_GIVEN
        kwargs["help"] = kwargs.get("help", "") + " (required)"
    action = parser.add_argument(name, type=convert, **kwargs)
    for old in old_names:
        parser.add_argument(old, dest=action.dest, type=convert, metavar=action.metavar,
                            default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return action
