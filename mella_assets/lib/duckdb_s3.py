"""DuckDB reading the lake over S3: the httpfs extension from its PyPI wheel (no download), endpoint from the
settings (``AWS_*``), credentials either explicit (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``) or, when
those are unset, from the AWS credential chain (shared config/credentials files and profiles, web identity as
IRSA uses it, SSO, the instance or task role) through the aws extension, refreshed when they expire."""

from __future__ import annotations

from urllib.parse import urlsplit

import duckdb

from mella_assets.settings import Settings, load_settings


def s3_secret_options(settings: Settings) -> dict[str, object]:
    """The options of the lake's S3 secret: explicit keys when both are set, else the credential chain."""
    options: dict[str, object] = {"TYPE": "s3"}
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        options.update(KEY_ID=settings.aws_access_key_id, SECRET=settings.aws_secret_access_key)
        if settings.aws_session_token:
            options["SESSION_TOKEN"] = settings.aws_session_token
    else:
        # Instance roles and IRSA hand out short-lived keys: `REFRESH auto` asks the chain again when they expire.
        # VALIDATION none: a public bucket needs no credentials at all (anonymous reads, as before).
        options.update(PROVIDER="credential_chain", REFRESH="auto", VALIDATION="none")
    options["REGION"] = settings.s3_region
    endpoint = settings.s3_endpoint
    if endpoint:
        parts = urlsplit(endpoint)
        options.update({"ENDPOINT": parts.netloc, "URL_STYLE": "path", "USE_SSL": parts.scheme == "https"})
    return options


def enable_s3(connection: duckdb.DuckDBPyConnection, settings: Settings | None = None) -> None:
    """Load httpfs (and aws for the credential chain) and create the lake's S3 secret from ``settings``
    (default: the settings loaded now; ``AWS_ENDPOINT_URL`` for MinIO / moto)."""
    settings = settings if settings is not None else load_settings()
    # `INSTALL httpfs` needs the extension server; the duckdb-extension-* wheels ship the same binaries.
    from duckdb_extensions import import_extension

    import_extension("httpfs", con=connection)
    options = s3_secret_options(settings)
    if options.get("PROVIDER") == "credential_chain":
        import_extension("aws", con=connection)
    rendered = ", ".join(
        f"{key} {str(value).lower() if isinstance(value, bool) else _quote(value)}" for key, value in options.items()
    )
    connection.execute(f"CREATE OR REPLACE SECRET mella_lake ({rendered})")


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"
