"""Serve a fake Pipedrive until Ctrl-C: `python -m sources.pipedrive_fake --port 8765 --deals 1000`."""

from __future__ import annotations

import argparse
import sys
import threading

from .fake import DEFAULT_SCALE, FakePipedrive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sources.pipedrive_fake", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--token", default="demo-token")
    parser.add_argument("--seed", type=int, default=1)
    for name, default in DEFAULT_SCALE.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, type=int, default=default, help=f"(default {default})")
    parser.add_argument(
        "--custom-fields", type=int, default=None, help="custom fields on deals (default ~23)"
    )
    parser.add_argument(
        "--messy", action="store_true", help="custom field values as messy as real accounts'"
    )
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per 2 s window")
    parser.add_argument("--daily-budget", type=int, default=None, help="daily token budget")
    parser.add_argument(
        "--oauth",
        action="append",
        default=[],
        metavar="CLIENT_ID:CLIENT_SECRET:REFRESH_TOKEN",
        help="register an OAuth app install (POST /oauth/token then refreshes it)",
    )
    parser.add_argument(
        "--webhook-time-scale",
        type=float,
        default=1.0,
        help="wall seconds per second of webhook retry/ban time (default 1; 0.01: 100x faster)",
    )
    args = parser.parse_args(argv)
    scale = {name: getattr(args, name) for name in DEFAULT_SCALE}
    fake = FakePipedrive(
        token=args.token,
        seed=args.seed,
        scale=scale,
        rate_limit=args.rate_limit,
        daily_budget=args.daily_budget,
        custom_field_count=args.custom_fields,
        host=args.host,
        port=args.port,
        messy=args.messy,
    )
    fake.webhooks.configure(time_scale=args.webhook_time_scale)
    for spec in args.oauth:
        client_id, secret, refresh = [*spec.split(":", 2), "", ""][:3]
        if not (client_id and secret and refresh):
            parser.error("--oauth takes CLIENT_ID:CLIENT_SECRET:REFRESH_TOKEN")
        fake.oauth_client(client_id, secret, refresh)
    fake.warm()
    fake.start()
    print(fake.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
