"""Configurable resources: where data lives (the lake), how it is fetched, and which models run.

`build_resources()` is the one place that chooses them, from the settings (mella_assets/settings.py; README,
Configuration).
"""

from mella_assets.resources.fetch import ImageFetcher
from mella_assets.resources.lake import Lake
from mella_assets.resources.langid import LanguageIdentification
from mella_assets.resources.models import Captioner, Evaluator, Translator
from mella_assets.resources.profile import build_resources
from mella_assets.resources.training import Training

__all__ = [
    "Captioner",
    "Evaluator",
    "ImageFetcher",
    "Lake",
    "LanguageIdentification",
    "Training",
    "Translator",
    "build_resources",
]
