"""Did-you-mean suggestions shared by validators and the loader."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, options: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """Return the option closest to ``word`` (case-insensitive), or None if nothing is close.

    Args:
        word: what the user wrote.
        options: the accepted spellings.
        cutoff: minimum similarity ratio in [0, 1].

    Returns:
        The best matching option in its original spelling, or None.
    """
    by_lower: dict[str, str] = {}
    for option in options:
        by_lower.setdefault(option.lower(), option)
    if word.lower() in by_lower and by_lower[word.lower()] != word:
        return by_lower[word.lower()]
    matches = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[matches[0]] if matches else None


def similarity(a: str, b: str) -> float:
    """Return difflib's similarity ratio of two strings, case-insensitive."""
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def one_of(options: Iterable[str]) -> str | None:
    """Render accepted values for an ``expected`` text: ``one of 'a', 'b', 'c'`` (None if there are none)."""
    quoted = [f"'{o}'" for o in options]
    if not quoted:
        return None
    return "one of " + ", ".join(quoted) if len(quoted) > 1 else quoted[0]
