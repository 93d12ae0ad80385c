"""The DuckDB catalog resource: SQL over every table of the lake."""

import dagster as dg
import duckdb
from mella_assets.resources.lake import Lake

from mella_assets.lib.catalog import open_catalog


class Catalog(dg.ConfigurableResource):
    """An in-process DuckDB connection with one view per lake table."""

    lake: Lake

    def connect(self) -> duckdb.DuckDBPyConnection:
        return open_catalog(self.lake.store)
