"""Where a version's files live: ``models/model=<name>/feature_set=<fs>@<fs_version>/version=<n>/``."""

from __future__ import annotations

from dataclasses import dataclass

from pfactory.registry.model import PairKey

MODEL_FILE = "model.skops"
CARD_JSON_FILE = "card.json"
CARD_MD_FILE = "card.md"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
REFERENCE_FILE = "reference.json"


def pair_prefix(pair: PairKey) -> str:
    """``models/model=<name>/feature_set=<fs_name>@<fs_version>/``."""
    return f"models/{pair}/"


@dataclass(frozen=True)
class VersionLayout:
    """The artifact keys of one version, identical on every artifact store."""

    pair: PairKey
    version: int

    @property
    def prefix(self) -> str:
        """The version's folder, ending in ``/``."""
        return f"{pair_prefix(self.pair)}version={self.version}/"

    def key(self, filename: str) -> str:
        """The key of ``filename`` inside the version's folder."""
        return self.prefix + filename

    @property
    def model(self) -> str:
        """The skops model binary."""
        return self.key(MODEL_FILE)

    @property
    def card_json(self) -> str:
        """The model card as JSON."""
        return self.key(CARD_JSON_FILE)

    @property
    def card_md(self) -> str:
        """The model card as Markdown."""
        return self.key(CARD_MD_FILE)

    @property
    def config(self) -> str:
        """The exact model config, as YAML."""
        return self.key(CONFIG_FILE)

    @property
    def metrics(self) -> str:
        """The evaluation metrics, as JSON."""
        return self.key(METRICS_FILE)

    @property
    def reference(self) -> str:
        """The training reference distributions (for drift checks), as JSON."""
        return self.key(REFERENCE_FILE)
