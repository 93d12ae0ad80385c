"""The demo's code location: the production definitions with the demo's resources (its own loopback web site
and a fetcher allowed to reach it). `mella demo` runs it in process and `make ui` serves it; production deployments
load ``mella_assets.definitions``, which knows nothing of the demo."""

from mella_assets.definitions import build_definitions
from mella_assets.demo.resources import demo_resources
from mella_assets.demo.site import is_demo_lake
from mella_assets.settings import load_settings

_settings = load_settings()
# A lake without the demo site is not the demo's: it gets the production resources (SSRF guard on), whoever loads
# this location.
defs = (
    build_definitions(demo_resources(_settings.lake, _settings.demo_site_port))
    if is_demo_lake(_settings.lake)
    else build_definitions()
)
