"""A version's model card as JSON, Markdown or HTML, built by ``pfactory.registry.cards`` from the record."""

from __future__ import annotations

import json
from typing import Any, Literal

from pfactory.registry import cards
from pfactory.registry.artifacts import ArtifactStore
from pfactory.registry.errors import ArtifactNotFoundError
from pfactory.registry.layout import VersionLayout
from pfactory.registry.model import ModelVersion

CardFormat = Literal["json", "md", "html"]
MEDIA_TYPES: dict[CardFormat, str] = {
    "json": "application/json",
    "md": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
_ACCEPTED: dict[str, CardFormat] = {
    "application/json": "json",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
}


def negotiate(format_: CardFormat | None, accept: str | None) -> CardFormat:
    """``?format=`` wins; else the first media type of ``Accept`` we can write; else JSON."""
    if format_ is not None:
        return format_
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in _ACCEPTED:
            return _ACCEPTED[media]
    return "json"


async def _metrics_document(artifacts: ArtifactStore, record: ModelVersion) -> dict[str, Any] | None:
    """The trainer's full metrics (``metrics.json``, for the calibration curve), if the registrar stored it."""
    try:
        raw = await artifacts.read(VersionLayout(record.pair, record.version).metrics)
    except ArtifactNotFoundError:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


async def render_card(artifacts: ArtifactStore, record: ModelVersion, format_: CardFormat) -> str:
    """The card of the version as it is now (status and approval history included), in one format."""
    card = cards.build_card(record, metrics_document=await _metrics_document(artifacts, record))
    if format_ == "md":
        return cards.render_markdown(card)
    if format_ == "html":
        return cards.render_html(card)
    return cards.render_json(card)
