"""Run the emulator as a process.

    python -m tests.harness.kubeapi --port 0 --kubeconfig PATH [--crds DIR]

Prints one line with the server URL, writes the kubeconfig, serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .emulator import DEFAULT_TOKEN, KubeAPIEmulator, read_crd_manifests


async def _main(args: argparse.Namespace) -> None:
    emulator = KubeAPIEmulator(args.host, args.port, token=args.token, history_size=args.history)
    await emulator.start_async()
    assert emulator.server is not None
    if args.crds:
        for doc in read_crd_manifests(args.crds):
            await emulator.server.apply_object(doc)
    if args.kubeconfig:
        emulator.write_kubeconfig(args.kubeconfig)
    print(emulator.url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop_async()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.kubeapi", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for this server here")
    parser.add_argument("--crds", help="apply the CRDs in the YAML files of this directory")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--history", type=int, default=2000, help="watch events kept per resource")
    args = parser.parse_args(argv)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
