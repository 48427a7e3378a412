"""bluesky ``event_page`` documents as the event documents they bundle."""

from __future__ import annotations

from typing import Any, Mapping


def events_of_page(page: Any) -> list[dict]:
    """The events of an ``event_page`` document (columns of equal length), as event documents."""
    if not isinstance(page, Mapping):
        return []
    data, seq = page.get("data"), page.get("seq_num")
    if not isinstance(data, Mapping) or not isinstance(seq, list):
        return []
    columns = {k: v for k, v in data.items() if isinstance(v, list) and len(v) == len(seq)}
    return [{"descriptor": page.get("descriptor"), "seq_num": n, "data": {k: v[i] for k, v in columns.items()}}
            for i, n in enumerate(seq)]
