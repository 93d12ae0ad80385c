"""Choose every resource from the settings (mella_assets/settings.py), in one place.

Settings (all optional): ``MELLA_LAKE`` (lake folder), ``MELLA_CAPTIONER_MODEL``, ``MELLA_TRANSLATOR_MODEL``,
``MELLA_BASE_MODEL`` (hub ids, paths or lake:// folders; default: the tiny demo models), the backends
(``MELLA_CAPTIONER_BACKEND``, ``MELLA_TRANSLATOR_BACKEND``, ``MELLA_EVALUATION_BACKEND`` and their URLs),
``MELLA_LANGID_BACKEND`` (lingua | langdetect) and ``MELLA_TRANSLATION_LANGUAGE_QA`` (enforce | record). The
demo wires its own fetcher on these (``mella_assets/demo/resources.py``). The openai backends' API
keys become ``dg.EnvVar`` fields: resolved when a run starts, shown in the UI by name only.
Arguments given to :func:`build_resources` win over the settings (tests use them).
"""

import dagster as dg

from mella_assets.resources.fetch import ImageFetcher
from mella_assets.resources.lake import Lake
from mella_assets.resources.langid import LanguageIdentification
from mella_assets.resources.models import Captioner, Evaluator, Translator
from mella_assets.resources.training import Training
from mella_assets.settings import load_settings

# Secrets a resource takes as a dg.EnvVar field: (resource key, field, variable).
SECRET_FIELDS = (
    ("captioner", "api_key", "MELLA_CAPTIONER_API_KEY"),
    ("translator", "api_key", "MELLA_TRANSLATOR_API_KEY"),
    ("evaluator", "api_key", "MELLA_EVALUATION_API_KEY"),
)


def build_resources(lake_root: str | None = None) -> dict[str, object]:
    """The resources of the code location, keyed by the names assets ask for."""
    settings = load_settings()
    lake = Lake(root=lake_root) if lake_root else Lake()
    # A key set now is passed by reference (dg.EnvVar, resolved when a run starts); a key that is not set now
    # is looked up in the settings when the backend is loaded (an unset EnvVar would fail every run).
    secrets = {
        resource: {name: dg.EnvVar(env)} for resource, name, env in SECRET_FIELDS if settings.by_env(env) is not None
    }
    return {
        "lake": lake,
        "fetcher": ImageFetcher(),
        "langid": LanguageIdentification(backend=settings.langid_backend),
        "captioner": Captioner(**secrets.get("captioner", {})),
        "translator": Translator(**secrets.get("translator", {})),
        "evaluator": Evaluator(**secrets.get("evaluator", {})),
        "training": Training(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
