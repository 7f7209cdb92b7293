"""A Stasis server for the remote CLI's tests: the service ``stasis serve`` builds (the
scheduler and the job runner over a catalog and one repository) with the REST API
beside it on a loopback port, until SIGTERM.

    python -m tests.cli.remote_server --repo PATH --catalog URL --connect URI PORT_FILE

The repository's passphrase comes from ``$STASIS_PASSPHRASE``; the port chosen is
written to PORT_FILE once the API listens.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

from stasis.api.app import create_app
from stasis.api.context import ApiContext
from stasis.api.server import ApiServer
from stasis.app import accounts as acc
from stasis.app.listen import Listen
from stasis.app.serve import service
from stasis.backends import open_backend
from stasis.cli.common import credentials
from stasis.repository import Repository


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--connect", default="test:///default")
    parser.add_argument("port_file", type=Path)
    args = parser.parse_args()
    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)

    def opened() -> tuple[dict[str, Repository], str]:
        return {"main": Repository.open(open_backend(args.repo),
                                        credentials(None, None))}, "main"

    with service(opened, policies=None, catalog=args.catalog, connect=args.connect,
                 keep_logs="30d") as run:
        svc = run.service
        ctx = ApiContext(catalog=svc.catalog, repositories={"main": svc.repo("main")},
                         default_repository="main", connect=args.connect,
                         authenticator=acc.CatalogAuthenticator(svc.catalog), wake=svc.wake)
        api = ApiServer(create_app(ctx), Listen("127.0.0.1", 0))
        svc.start()
        api.start()
        try:
            args.port_file.write_text(str(api.port))
            svc.serve(stop, tick_s=0.2)
        finally:
            api.stop()


if __name__ == "__main__":
    main()
