"""Choose every resource from the environment, in one place.

Variables (all optional): ``MELLA_LAKE`` (lake folder), ``MELLA_CAPTIONER_MODEL``, ``MELLA_TRANSLATOR_MODEL``,
``MELLA_BASE_MODEL`` (hub ids, paths or lake:// folders; default: the tiny demo models),
``MELLA_LANGID_BACKEND`` (lingua | langdetect), ``MELLA_TRANSLATION_LANGUAGE_QA`` (enforce | record) and
``MELLA_DEMO_SITE=1`` (serve the demo web site on loopback and allow fetching from it).
Arguments given to :func:`build_resources` win over the environment (tests use them).
"""

import os

import dagster as dg
from mella_assets.resources.catalog import Catalog
from mella_assets.resources.fetch import ImageFetcher
from mella_assets.resources.lake import Lake
from mella_assets.resources.langid import LanguageIdentification
from mella_assets.resources.models import Captioner, Translator
from mella_assets.resources.training import Training


def build_resources(
    lake_root: str | None = None,
    demo_site: bool | None = None,
    demo_site_port: int | None = None,
    enforce_translation_language: bool | None = None,
    demo_site_dir: str | None = None,
) -> dict[str, object]:
    """The resources of the code location, keyed by the names assets ask for.

    The demo web site is served from ``demo/site`` of a local lake, or from ``demo_site_dir`` (an S3 lake keeps
    no local folder)."""
    lake = Lake(root=lake_root) if lake_root else Lake()
    if demo_site is None:
        demo_site = os.environ.get("MELLA_DEMO_SITE") == "1"
    port = demo_site_port or int(os.environ.get("MELLA_DEMO_SITE_PORT", "18470"))
    fetcher = ImageFetcher(
        allow_private_addresses=demo_site,
        demo_site_dir=(demo_site_dir or str(lake.store.path("demo/site"))) if demo_site else None,
        demo_site_port=port,
    )
    translator = (
        Translator(enforce_output_language=enforce_translation_language)
        if enforce_translation_language is not None
        else Translator()
    )
    return {
        "lake": lake,
        "catalog": Catalog(lake=lake),
        "fetcher": fetcher,
        "langid": LanguageIdentification(backend=os.environ.get("MELLA_LANGID_BACKEND", "lingua")),
        "captioner": Captioner(),
        "translator": translator,
        "training": Training(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
