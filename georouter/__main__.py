"""``python -m georouter`` and the ``georouter`` command."""

import signal
import sys


def run() -> None:
    # Before the imports (half a second here): `georouter serve` takes SIGHUP as
    # "reload" once it serves, and one that arrives while it starts (systemctl
    # reload right after start) must not end it, as SIGHUP's default action would.
    # Ignored until the serving loop installs the reload handler.
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from georouter.cli import main  # noqa: PLC0415 - after the signal disposition

    sys.exit(main())


if __name__ == "__main__":
    run()
