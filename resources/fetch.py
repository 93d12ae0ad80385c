"""The image fetcher resource: HTTP with an SSRF guard, size and time caps, and image validation limits."""

import dagster as dg
from pydantic import Field

from mella_assets.lib.http import HttpFetcher


class ImageFetcher(dg.ConfigurableResource):
    """How images are downloaded and which ones are accepted."""

    timeout_s: float = Field(10.0, description="Connect and read timeout per request, seconds.")
    max_bytes: int = Field(20_000_000, description="Largest accepted response body.")
    max_workers: int = Field(8, description="Concurrent downloads within one partition.")
    allow_private_addresses: bool = Field(
        False, description="Allow loopback/private targets (only for the demo site and tests: an SSRF risk)."
    )
    min_side: int = Field(64, description="Images whose shorter side is below this are rejected (icons, pixels).")
    max_pixels: int = Field(40_000_000, description="Pixel count above which an image is a decompression bomb.")
    max_side: int = Field(1024, description="Stored images are downscaled so their longer side is at most this.")
    demo_site_dir: str | None = Field(
        None, description="Serve the demo web site from this folder on loopback while assets run (demo only)."
    )
    demo_site_port: int = Field(18470, description="Loopback port of the demo web site.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.demo_site_dir:
            from mella_assets.testing.site import ensure_demo_site_server

            ensure_demo_site_server(self.demo_site_dir, self.demo_site_port)

    def http(self) -> HttpFetcher:
        return HttpFetcher(
            timeout_s=self.timeout_s,
            max_bytes=self.max_bytes,
            allow_private_addresses=self.allow_private_addresses,
        )
