"""``python -m pfactory.gateway``: serve the API; ``create-key`` / ``new-key`` for the first admin key."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pfactory.gateway.auth import ALL_SCOPES, create_api_key, new_api_key
from pfactory.gateway.settings import GatewaySettings


async def _create_key(settings: GatewaySettings, name: str, scopes: list[str]) -> str:
    from pfactory.gateway.adapters.sqlite import SqliteGatewayStore

    store = SqliteGatewayStore(settings.database_path)
    try:
        raw, _ = await create_api_key(store, name, scopes)
    finally:
        await store.close()
    return raw


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it."""
    parser = argparse.ArgumentParser(prog="python -m pfactory.gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the HTTP API (the default)")
    create = commands.add_parser("create-key", help="store a new API key in the gateway database, print it")
    create.add_argument("--name", default="admin", help="label of the key")
    create.add_argument(
        "--scopes",
        default=",".join(sorted(ALL_SCOPES)),
        help="comma-separated scopes among submit, read, admin (default: all)",
    )
    commands.add_parser(
        "new-key", help="print a fresh key for PF_GATEWAY_BOOTSTRAP_ADMIN_KEY (stores nothing)"
    )
    args = parser.parse_args(argv)
    if args.command == "new-key":
        print(new_api_key()[0])
        return 0
    settings = GatewaySettings()
    if args.command == "create-key":
        scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
        unknown = sorted(set(scopes) - set(ALL_SCOPES))
        if unknown or not scopes:
            parser.error(f"unknown scope(s) {unknown}; choose among {sorted(ALL_SCOPES)}")
        print(asyncio.run(_create_key(settings, args.name, scopes)))
        return 0
    from pfactory.bus.app import configure_process

    configure_process(settings.telemetry, "gateway", settings.log_level)  # before importing the app
    import uvicorn

    from pfactory.gateway.app import create_app

    # log_config=None: uvicorn's loggers propagate to the root handler, in the configured format
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level.lower(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
