"""DuckDB reading the lake over S3: the httpfs extension from its PyPI wheel (no download), credentials and
endpoint from the environment."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import duckdb


def enable_s3(connection: duckdb.DuckDBPyConnection) -> None:
    """Load httpfs and create an S3 secret from ``AWS_*`` variables (``AWS_ENDPOINT_URL`` for MinIO / moto)."""
    # `INSTALL httpfs` needs the extension server; the duckdb-extension-httpfs wheel ships the same binary.
    from duckdb_extensions import import_extension

    import_extension("httpfs", con=connection)
    options = {
        "TYPE": "s3",
        "KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ""),
        "SECRET": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        "REGION": os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
    }
    if os.environ.get("AWS_SESSION_TOKEN"):
        options["SESSION_TOKEN"] = os.environ["AWS_SESSION_TOKEN"]
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if endpoint:
        parts = urlsplit(endpoint)
        options.update({"ENDPOINT": parts.netloc, "URL_STYLE": "path", "USE_SSL": parts.scheme == "https"})
    rendered = ", ".join(
        f"{key} {str(value).lower() if isinstance(value, bool) else _quote(value)}" for key, value in options.items()
    )
    connection.execute(f"CREATE OR REPLACE SECRET mella_lake ({rendered})")


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"
