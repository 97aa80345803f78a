"""``python -m interlinked.local.emulator --host H --port P --state-dir DIR [--interval S] [--enforce-iam]``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from interlinked.local.emulator.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto's server with its state kept in --state-dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--state-dir", type=Path, required=True, help="where snapshots are kept")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="at most one snapshot per this many seconds (default 1)"
    )
    parser.add_argument(
        "--enforce-iam",
        action="store_true",
        help="check request signatures and IAM policies (the keys test/test are the admin user)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.host, args.port, args.state_dir, interval=args.interval, enforce_iam=args.enforce_iam)


if __name__ == "__main__":
    main()
