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
    from rolecall.config import Settings, _env_bool

    defaults = Settings()
    p = sub.add_parser("run", help="run the operator")
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="namespace (or glob) to watch; repeat; default: all",
    )
    p.add_argument(
        "--kubeconfig",
        default=os.environ.get("ROLECALL_KUBECONFIG"),
        help="kubeconfig file (default: in-cluster, then ~/.kube/config)",
    )
    p.add_argument("--context", default=None, help="kubeconfig context")
    p.add_argument(
        "--region",
        default=defaults.default_region,
        help="default STS region (default: AWS_REGION or us-east-1)",
    )
    p.add_argument(
        "--sts-rate",
        type=float,
        default=float(os.environ.get("ROLECALL_STS_RATE", defaults.sts_rate)),
        help="AssumeRole calls per second, whole operator (default: %(default)s)",
    )
    p.add_argument(
        "--sts-burst",
        type=int,
        default=int(os.environ.get("ROLECALL_STS_BURST", defaults.sts_burst)),
        help="token-bucket burst (default: %(default)s)",
    )
    p.add_argument(
        "--sts-concurrency",
        type=int,
        default=defaults.sts_concurrency,
        help="AssumeRole calls in flight at once (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="bindings reconciled at once (default: %(default)s)",
    )
    p.add_argument(
        "--enforce-access",
        default=os.environ.get("ROLECALL_ENFORCE_ACCESS", "true"),
        choices=["true", "false"],
        help="deny bindings no AssumedRolePolicy admits (default: true)",
    )
    p.add_argument(
        "--session-tags",
        default=os.environ.get("ROLECALL_SESSION_TAGS", "true"),
        choices=["true", "false"],
        help="send automatic session tags (default: true)",
    )
    p.add_argument(
        "--cluster-name",
        default=os.environ.get("ROLECALL_CLUSTER_NAME", ""),
        help="value of the kubernetes-cluster-name session tag",
    )
    p.add_argument(
        "--operator-keys-secret",
        default=os.environ.get("ROLECALL_OPERATOR_KEYS_SECRET"),
        help="namespace/name of a Secret with the operator's static AWS keys (default: the AWS SDK chain)",
    )
    p.add_argument(
        "--default-injection-mode",
        default=defaults.default_injection_mode,
        choices=["sidecar", "file", "env"],
    )
    p.add_argument(
        "--sidecar-image", default=os.environ.get("ROLECALL_SIDECAR_IMAGE", defaults.sidecar_image)
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=defaults.health_port,
        help="port of /healthz and /metrics (0: any free port, -1: off)",
    )
    p.add_argument("--health-host", default=defaults.health_host)
    p.add_argument(
        "--webhook",
        action="store_true",
        default=_env_bool("ROLECALL_WEBHOOK", False),
        help="serve the admission webhooks",
    )
    p.add_argument("--webhook-port", type=int, default=defaults.webhook_port)
    p.add_argument("--webhook-host", default=defaults.webhook_host)
    p.add_argument(
        "--webhook-cert",
        default=None,
        help="TLS certificate file (default: self-signed, development only)",
    )
    p.add_argument("--webhook-key", default=None)
    p.add_argument(
        "--webhook-service", default=None, help="namespace/name of the webhook Service (production)"
    )
    p.add_argument(
        "--webhook-url-host",
        default=None,
        help="development: register the webhooks at https://HOST:PORT",
    )
    p.add_argument(
        "--webhook-failure-policy",
        default=defaults.webhook_failure_policy,
        choices=["Ignore", "Fail"],
    )
    p.add_argument(
        "--ha",
        default=os.environ.get("ROLECALL_HA", "lease"),
        choices=["lease", "none"],
        help="lease: several replicas, one active (default); none: single replica",
    )
    p.add_argument("--lease-namespace", default=defaults.lease_namespace)
    p.add_argument("--lease-name", default=defaults.lease_name)
    p.add_argument("--lease-seconds", type=float, default=defaults.lease_seconds)
    p.add_argument("--verbose", "-v", action="store_true")


def settings_from_args(args: argparse.Namespace) -> Settings:
    from rolecall.config import Settings

    return Settings(
        namespaces=tuple(args.namespace),
        kubeconfig=args.kubeconfig,
        context=args.context,
        default_region=args.region,
        sts_rate=args.sts_rate,
        sts_burst=args.sts_burst,
        sts_concurrency=args.sts_concurrency,
        workers=args.workers,
        enforce_access=args.enforce_access == "true",
        session_tags=args.session_tags == "true",
        cluster_name=args.cluster_name,
        operator_keys_secret=args.operator_keys_secret,
        default_injection_mode=args.default_injection_mode,
        sidecar_image=args.sidecar_image,
        health_host=args.health_host,
        health_port=args.health_port,
        webhook_enabled=args.webhook,
        webhook_host=args.webhook_host,
        webhook_port=args.webhook_port,
        webhook_cert=args.webhook_cert,
        webhook_key=args.webhook_key,
        webhook_service=args.webhook_service,
        webhook_url_host=args.webhook_url_host,
        webhook_failure_policy=args.webhook_failure_policy,
        ha=args.ha,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        lease_seconds=args.lease_seconds,
        verbose=args.verbose,
    )


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
