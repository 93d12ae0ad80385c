"""The language identification resource."""

from collections.abc import Sequence

import dagster as dg
from pydantic import Field

from mella_assets.languages import Language
from mella_assets.lib.langid import LanguageIdentifier


class LanguageIdentification(dg.ConfigurableResource):
    """Which language-ID backend checks alt texts and translations (rules: ``mella_assets/lib/langid.py``)."""

    backend: str = Field(
        "lingua",
        description="'lingua' (default: script rules, CLD2 for clear texts, lingua for the rest) or 'langdetect'.",
    )
    accept_undecided_serbian: bool = Field(
        True,
        description=(
            "Keep a Latin-script text for Serbian when its words read as Serbian, Croatian and Bosnian alike and "
            "its page declares none of them (on the benchmark set: keeping costs Serbian precision, dropping "
            "costs Latin-script Serbian recall; see benchmarks/bench_langid.py)."
        ),
    )

    def identifier(self, targets: Sequence[Language]) -> LanguageIdentifier:
        return LanguageIdentifier(
            backend=self.backend, targets=list(targets), accept_undecided_serbian=self.accept_undecided_serbian
        )
