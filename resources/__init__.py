"""Configurable resources: where data lives (lake, catalog), how it is fetched, and which models run.

`build_resources()` is the one place that chooses them from the environment (see README, Configuration).
"""

from resources.catalog import Catalog
from resources.fetch import ImageFetcher
from resources.lake import Lake
from resources.langid import LanguageIdentification
from resources.models import Captioner, Translator
from resources.profile import build_resources
from resources.training import Training

__all__ = [
    "Captioner",
    "Catalog",
    "ImageFetcher",
    "Lake",
    "LanguageIdentification",
    "Training",
    "Translator",
    "build_resources",
]
