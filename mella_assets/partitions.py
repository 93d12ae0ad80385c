"""The language partitions every per-language asset uses: one per language of the registry.

Kept apart from ``languages.py`` so the registry stays Dagster-free (the tiny-model builders and the GPU check
import it on machines without Dagster).
"""

import dagster as dg

from mella_assets.languages import LANGUAGES

LANGUAGE_PARTITIONS = dg.StaticPartitionsDefinition(list(LANGUAGES))
