"""DuckDB reading the lake over S3: the httpfs extension from its PyPI wheel (no download), credentials and
endpoint from the settings (``AWS_*``)."""

from __future__ import annotations

from urllib.parse import urlsplit

import duckdb

from mella_assets.settings import Settings, load_settings


def enable_s3(connection: duckdb.DuckDBPyConnection, settings: Settings | None = None) -> None:
    """Load httpfs and create an S3 secret from the ``AWS_*`` settings (``AWS_ENDPOINT_URL`` for MinIO / moto) of
    ``settings`` (default: the settings loaded now)."""
    settings = settings if settings is not None else load_settings()
    # `INSTALL httpfs` needs the extension server; the duckdb-extension-httpfs wheel ships the same binary.
    from duckdb_extensions import import_extension

    import_extension("httpfs", con=connection)
    options = {
        "TYPE": "s3",
        "KEY_ID": settings.aws_access_key_id or "",
        "SECRET": settings.aws_secret_access_key or "",
        "REGION": settings.s3_region,
    }
    if settings.aws_session_token:
        options["SESSION_TOKEN"] = settings.aws_session_token
    endpoint = settings.s3_endpoint
    if endpoint:
        parts = urlsplit(endpoint)
        options.update({"ENDPOINT": parts.netloc, "URL_STYLE": "path", "USE_SSL": parts.scheme == "https"})
    rendered = ", ".join(
        f"{key} {str(value).lower() if isinstance(value, bool) else _quote(value)}" for key, value in options.items()
    )
    connection.execute(f"CREATE OR REPLACE SECRET mella_lake ({rendered})")


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"
