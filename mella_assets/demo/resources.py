"""The demo's resources: the production resources, with an image fetcher that serves and fetches the demo's own
loopback web site. Production resources know nothing of the demo (docs/architecture.md, "Layers")."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from mella_assets.demo.site import HOST, ensure_demo_site_server
from mella_assets.resources import build_resources
from mella_assets.resources.fetch import ImageFetcher
from mella_assets.resources.models import Translator
from mella_assets.settings import Settings

DEFAULT_SITE_PORT = Settings().demo_site_port


class DemoImageFetcher(ImageFetcher):
    """The image fetcher of the demo: serves the demo site from ``site_dir`` on loopback while assets run (also in
    the run processes `make ui` starts), may fetch from the site's loopback address (and no other private address:
    the SSRF guard stays on), and — the site being our own — fetches it without the per-host delay."""

    site_dir: str = Field(description="Folder of the demo web site (built by `mella demo`).")
    site_port: int = Field(DEFAULT_SITE_PORT, description="Loopback port of the demo web site.")
    allowed_networks: list[str] = Field(default_factory=lambda: [f"{HOST}/32"])
    max_per_host: int = 8
    delay_s: float = 0.0

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        ensure_demo_site_server(self.site_dir, self.site_port)


def demo_resources(
    lake_root: str,
    site_port: int = DEFAULT_SITE_PORT,
    site_dir: str | None = None,
) -> dict[str, object]:
    """The production resources on ``lake_root`` with the demo's fetcher; the site is served from ``demo/site`` of a
    local lake, or from ``site_dir`` (an S3 lake keeps no local folder)."""
    resources = build_resources(lake_root=lake_root)
    # Tiny random models cannot write the target language: translation QA records the output-language check
    # instead of enforcing it (every other check still rejects). Real checkpoints: the production default.
    resources["translator"] = Translator(enforce_output_language=False)
    lake = resources["lake"]
    resources["fetcher"] = DemoImageFetcher(site_dir=site_dir or str(lake.path("demo/site")), site_port=site_port)
    return resources
