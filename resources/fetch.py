"""The image fetcher resource: polite HTTP (robots.txt, per-host concurrency and delay, retries) with an SSRF
guard, size and time caps, and the limits an image must meet to be kept."""

import dagster as dg
from pydantic import Field

from mella_assets.know.image_fetch import ImageLimits
from mella_assets.know.images import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_NEAR_DUPLICATE_BITS
from mella_assets.lib.http import DEFAULT_USER_AGENT, IMAGE_CONTENT_TYPES, HttpFetcher
from mella_assets.lib.robots import RobotsCache


class ImageFetcher(dg.ConfigurableResource):
    """How images (and registered remote WARC files) are downloaded, and which images are accepted."""

    timeout_s: float = Field(10.0, description="Connect and read timeout per request, seconds.")
    total_timeout_s: float | None = Field(
        None,
        description="Wall-clock cap of one fetch (queue, connect, status line, headers, body, redirects, retries),"
        " seconds; past it the image is a retryable 'timeout' reject. Default: 3 x timeout_s.",
    )
    max_bytes: int = Field(20_000_000, description="Largest accepted response body.")
    max_workers: int = Field(8, description="Concurrent downloads within one partition (across hosts).")
    max_per_host: int = Field(2, description="Requests in flight per host at most.")
    delay_s: float = Field(0.25, description="Least time between two request starts on one host, seconds.")
    max_retries: int = Field(2, description="Retries after 429/5xx (with backoff, honouring Retry-After).")
    backoff_s: float = Field(1.0, description="First retry wait without Retry-After; doubles each retry.")
    respect_robots: bool = Field(True, description="Obey robots.txt of image hosts (switch off only for own hosts).")
    user_agent: str = Field(DEFAULT_USER_AGENT, description="User-Agent sent with every request.")
    allow_private_addresses: bool = Field(
        False, description="Allow loopback/private targets (only for the demo site and tests: an SSRF risk)."
    )
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="Networks reachable although private, e.g. ['127.0.0.1/32'] for a loopback mirror.",
    )
    min_side: int = Field(64, description="Images whose shorter side is below this are rejected (icons, pixels).")
    max_pixels: int = Field(40_000_000, description="Pixel count above which an image is a decompression bomb.")
    max_side: int = Field(1024, description="Stored images are downscaled so their longer side is at most this.")
    max_aspect_ratio: float = Field(DEFAULT_MAX_ASPECT_RATIO, description="Longer/shorter side above this: rejected.")
    near_duplicate_bits: int = Field(
        DEFAULT_NEAR_DUPLICATE_BITS, description="dHash distance up to which two images are near duplicates."
    )
    retry_rejected: bool = Field(
        False,
        description="Fetch again the URLs whose earlier reject is permanent (404/410, not an image, failed limits"
        " unchanged since); transient failures are always retried.",
    )

    def http(self, *, images_only: bool = True, max_bytes: int | None = None) -> HttpFetcher:
        """A fetcher with this resource's policy; ``images_only`` refuses non-image content types."""
        return HttpFetcher(
            timeout_s=self.timeout_s,
            total_timeout_s=self.total_timeout_s,
            max_bytes=max_bytes or self.max_bytes,
            allow_private_addresses=self.allow_private_addresses,
            user_agent=self.user_agent,
            allowed_networks=self.allowed_networks,
            max_per_host=self.max_per_host,
            delay_s=self.delay_s,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
            robots=RobotsCache() if self.respect_robots else None,
            accept_content_types=IMAGE_CONTENT_TYPES if images_only else None,
        )

    def limits(self) -> ImageLimits:
        return ImageLimits(
            min_side=self.min_side,
            max_pixels=self.max_pixels,
            max_side_out=self.max_side,
            max_aspect_ratio=self.max_aspect_ratio,
            near_duplicate_bits=self.near_duplicate_bits,
        )
