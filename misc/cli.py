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
