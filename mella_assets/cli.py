"""The `mella` command: demo, SQL over the lake, and the Dagster UI."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

# The modules in mella_assets/commands/, each with a `register(subparsers)`. A command line naming one of them
# imports only that module: `mella langid` answers without importing the crawler, polars, Dagster or torch.
COMMAND_MODULES = {
    name: f"mella_assets.commands.{name.replace('-', '_')}"
    for name in ("score", "crawl", "extract", "langid", "train", "cc-select", "push")
}
BUILTIN_COMMANDS = ("demo", "sql", "ui")
DEFAULT_UI_PORT = 3000


def _lake_default() -> str:
    from mella_assets.settings import load_settings

    return load_settings().lake


def cmd_demo(args: argparse.Namespace) -> int:
    from mella_assets.demo.run import run_demo

    languages = [c.strip() for c in args.languages.split(",")] if args.languages else None
    run_demo(args.lake, args.dagster_home, languages, args.site_port)
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import polars as pl

    from mella_assets.lib.catalog import list_tables, run_sql, to_csv
    from mella_assets.lib.lake import LakeStore

    if not args.tables and not args.query:
        print("error: give a query, or --tables to list the lake's tables", file=sys.stderr)
        return 2
    try:
        if args.tables:
            result = list_tables(LakeStore(args.lake))
        else:
            result = run_sql(LakeStore(args.lake), args.query, allow_external=args.allow_external)
    except Exception as error:  # a SQL error is the user's to fix: show it plainly
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.format == "csv":
        print(to_csv(result), end="")
    else:
        with pl.Config(tbl_rows=args.max_rows, tbl_cols=50, fmt_str_lengths=80, tbl_hide_dataframe_shape=False):
            print(result)
    return 0


def write_ui_workspace(dagster_home: str, module: str) -> str:
    """Writes ``<dagster_home>/workspace.yaml`` serving ``module`` under its location name (``mella`` or
    ``mella-demo``; `dagster dev -m` would name it after the module) and returns its path. Rewritten on every start:
    the lake decides which location is served."""
    from pathlib import Path

    import yaml

    from mella_assets.demo.run import DEMO_CODE_LOCATION, DEMO_LOCATION_NAME, PRODUCTION_LOCATION_NAME

    name = DEMO_LOCATION_NAME if module == DEMO_CODE_LOCATION else PRODUCTION_LOCATION_NAME
    entry = {"module_name": module, "location_name": name, "working_directory": os.getcwd()}
    path = Path(dagster_home).resolve() / "workspace.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    workspace = yaml.safe_dump({"load_from": [{"python_module": entry}]})
    path.write_text("# Written by `mella ui` on each start.\n" + workspace)
    return str(path)


def cmd_ui(args: argparse.Namespace) -> int:
    from mella_assets.demo.run import configure_ui_environment

    # The demo's code location for a demo lake only; any other lake: production (SSRF guard on).
    location = configure_ui_environment(args.lake, args.dagster_home, args.site_port)
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        write_ui_workspace(args.dagster_home, location),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(f"Dagster UI on http://{args.host}:{args.port} (instance {os.environ['DAGSTER_HOME']})", flush=True)
    return subprocess.call(command)


def _add_builtin_commands(sub: argparse._SubParsersAction) -> None:
    from mella_assets.demo.run import DEFAULT_DAGSTER_HOME, DEFAULT_SITE_PORT

    def with_lake(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--lake", default=_lake_default(), help="lake folder (default: $MELLA_LAKE or .mella/lake)")
        return p

    def with_instance(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--dagster-home",
            default=os.environ.get("DAGSTER_HOME", DEFAULT_DAGSTER_HOME),
            help="Dagster instance folder (default: $DAGSTER_HOME or .mella/dagster_home)",
        )
        p.add_argument("--site-port", type=int, default=DEFAULT_SITE_PORT, help="loopback port of the demo web site")
        return p

    demo = with_instance(with_lake(sub.add_parser("demo", help="build the demo corpus and run every asset")))
    demo.add_argument("--languages", help="comma-separated codes (default: all configured languages)")
    demo.set_defaults(func=cmd_demo)

    sql = with_lake(sub.add_parser("sql", help="run SQL over the lake's tables (one view per asset)"))
    sql.add_argument("query", nargs="?", help='e.g. "SELECT language, count(*) FROM d_know GROUP BY 1"')
    sql.add_argument("--tables", action="store_true", help="list the lake's tables and views with their row counts")
    sql.add_argument("--format", choices=["table", "csv"], default="table", help="output format")
    sql.add_argument("--max-rows", type=int, default=50, help="rows shown in table format")
    sql.add_argument(
        "--allow-external",
        action="store_true",
        help="full DuckDB: any statement (COPY, ATTACH, INSTALL, ...) and any file or URL; by default only SELECT "
        "runs and only the lake's tables can be read",
    )
    sql.set_defaults(func=cmd_sql)

    ui = with_instance(with_lake(sub.add_parser("ui", help="start the Dagster UI on the demo's instance")))
    ui.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback)")
    ui.add_argument("--port", type=int, default=DEFAULT_UI_PORT, help=f"UI port (default {DEFAULT_UI_PORT})")
    # The UI's port was --ui-port before --port meant it: kept, unlisted, so older scripts still work.
    ui.add_argument("--ui-port", dest="port", type=int, help=argparse.SUPPRESS)
    ui.set_defaults(func=cmd_ui)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `mella` parser; for a ``command`` of mella_assets/commands/ only that command's parser (and import)."""
    parser = argparse.ArgumentParser(prog="mella", description="MELLA: multilingual image-text data as Dagster assets.")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error (before the command)")
    sub = parser.add_subparsers(dest="command", required=True)
    if command in COMMAND_MODULES:
        importlib.import_module(COMMAND_MODULES[command]).register(sub)
        return parser
    _add_builtin_commands(sub)
    if command not in BUILTIN_COMMANDS:  # no or an unknown command: the help lists them all
        for module in COMMAND_MODULES.values():
            importlib.import_module(module).register(sub)
    return parser


# Exit codes, the same for every subcommand: 0 success, 1 a failure while running (a missing, unreadable or bad
# input, nothing produced), 2 a usage error (argparse's own code: unknown flags, bad flag values).
EXIT_FAILURE, EXIT_USAGE = 1, 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # one line for the user; the traceback only when asked for
        if args.verbose:
            raise
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]  # SQL errors span lines
        if isinstance(error, OSError) and error.filename is not None:
            detail = f"{error.strerror or type(error).__name__}: {error.filename}"
        print(f"error: {detail} (mella --verbose … shows the traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
