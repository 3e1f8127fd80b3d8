"""The canonical in-memory form every reader produces: one domain's interactions and item texts."""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets


@dataclass
class RawDomain:
    """One domain as read from disk, before any filtering.

    Attributes:
        name: domain name, e.g. ``"Scientific"``; used in metric names and cache keys.
        interactions: Arrow table with columns ``user_id`` (string), ``item_id`` (string) and
            ``timestamp`` (float64), one row per interaction, in file order. Where a source has no
            time, ``timestamp`` is the position in the user's history.
        items: Arrow table with ``item_id`` (string, unique) and one string column per text field,
            in the source's field order (missing values are empty strings).
        text_fields: the text columns of ``items``, in order.
        source: where it was read from (a path or a description), for messages.
        counts: what the reader dropped on purpose and why, e.g. ``{"duplicate_items": 3}``.
    """

    name: str
    interactions: datasets.Dataset
    items: datasets.Dataset
    text_fields: list[str]
    source: str
    counts: dict[str, int] = field(default_factory=dict)
