"""The language identification resource."""

from collections.abc import Sequence

import dagster as dg
from pydantic import Field

from mella_assets.languages import Language
from mella_assets.lib.langid import LanguageIdentifier


class LanguageIdentification(dg.ConfigurableResource):
    """Which language-ID backend checks alt texts and translations."""

    backend: str = Field("lingua", description="'lingua' (default, all languages loaded) or 'langdetect'.")

    def identifier(self, targets: Sequence[Language]) -> LanguageIdentifier:
        return LanguageIdentifier(backend=self.backend, targets=list(targets))
