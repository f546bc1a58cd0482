"""``rolecall run | sidecar | assume`` — argument parsing and wiring, nothing else."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rolecall.config import Settings

from rolecall import __version__


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``rolecall run``'s flags, generated from the settings table in config.py."""
    from rolecall.config import add_arguments

    add_arguments(sub.add_parser("run", help="run the operator"))


def settings_from_args(args: argparse.Namespace) -> Settings:
    from rolecall.config import from_args

    return from_args(args)


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from rolecall.app import App
    from rolecall.runtime import run_operator

    settings = settings_from_args(args)
    from rolecall import logs

    logs.setup(settings.verbose)

    async def main() -> None:
        # kopf installs its own SIGINT/SIGTERM handlers and stops cleanly on them; the hook
        # (install) runs a fresh operator whenever the CRDs are served, and waits while not
        from rolecall import crds

        await crds.supervise(settings, lambda stop: run_operator(App(settings), stop_flag=stop))

    asyncio.run(main())
    return 0


def _cmd_assume(args: argparse.Namespace) -> int:
    from rolecall.model import SpecError
    from rolecall.oneshot import assume_once
    from rolecall.sts import STSError

    try:
        sys.stdout.write(
            assume_once(
                args.file,
                args.format,
                region=args.region,
                cluster_name=args.cluster_name,
                session_tags=not args.no_session_tags,
            )
        )
    except (SpecError, STSError, ValueError, OSError) as exc:
        print(f"rolecall assume: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sidecar"]:
        # the sidecar runs in every pod: hand over before importing anything heavy
        from rolecall import sidecar

        return sidecar.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="rolecall", description="AWS IAM roles for Kubernetes workloads, on any cluster."
    )
    parser.add_argument("--version", action="version", version=f"rolecall {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    sub.add_parser(
        "sidecar", help="serve the container-credentials endpoint in a pod (rolecall sidecar --help)"
    )
    a = sub.add_parser(
        "assume", help="assume the role of an AssumedRole manifest once, with local AWS credentials"
    )
    a.add_argument("-f", "--file", required=True, help="a YAML file with an AssumedRole")
    a.add_argument(
        "--format",
        choices=["env", "json", "ini"],
        default="env",
        help="shell exports (default), credential_process JSON, or an ini profile",
    )
    a.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    a.add_argument("--cluster-name", default="", help="value of the kubernetes-cluster-name session tag")
    a.add_argument("--no-session-tags", action="store_true", help="do not send the automatic session tags")
    from rolecall import doctor, trustpolicy  # hook (install): subcommands registered by their modules

    trustpolicy.register(sub)
    doctor.register(sub)
    args = parser.parse_args(argv)
    if getattr(args, "handler", None):
        return int(args.handler(args))
    if args.command == "run":
        return _cmd_run(args)
    return _cmd_assume(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
