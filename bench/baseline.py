"""The floor: the same AssumeRole + Secret create for every AssumedRole, with no operator.

    python -m bench.baseline --kubeconfig PATH --workers 16 --sts-concurrency 8 \
        --sts-rate 200 --sts-burst 20

Threads, one boto3 STS client and the kubernetes client's ApiClient (JSON in and out, as
the operator's adapter uses it); no kopf, no watch, no status, no
events, no reads beyond the one LIST of AssumedRoles. The same STS token bucket, concurrency
and AssumeRole parameters (session name, automatic session tags) as the operator, and a
Secret with the same keys. Prints one JSON line with its phase timings.
"""

from __future__ import annotations

import time

T0 = time.monotonic()

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import secrets  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlencode  # noqa: E402

import boto3  # noqa: E402
import kubernetes.client  # noqa: E402
import kubernetes.config  # noqa: E402
from botocore.config import Config  # noqa: E402


class Bucket:
    """A blocking token bucket (thread-safe): ``rate`` per second, ``burst`` saved up."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                time.sleep((1 - self.tokens) / self.rate)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret_body(ar: dict[str, Any], creds: dict[str, Any]) -> dict[str, Any]:
    meta = ar["metadata"]
    expiration = creds["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ")
    akid, sak, token = creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
    data = {
        "AWS_ACCESS_KEY_ID": akid,
        "AWS_SECRET_ACCESS_KEY": sak,
        "AWS_SESSION_TOKEN": token,
        "AWS_CREDENTIAL_EXPIRATION": expiration,
        "credentials": f"[default]\naws_access_key_id = {akid}\naws_secret_access_key = {sak}\n"
        f"aws_session_token = {token}\n",
        "config": "[default]\ncredential_process = cat /var/run/secrets/rolecall.dev/aws/credentials.json\n",
        "credentials.json": json.dumps(
            {
                "Version": 1,
                "AccessKeyId": akid,
                "SecretAccessKey": sak,
                "SessionToken": token,
                "Expiration": expiration,
            }
        ),
        "token": secrets.token_urlsafe(32),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "bench-baseline"},
            "ownerReferences": [
                {
                    "apiVersion": ar["apiVersion"],
                    "kind": ar["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "data": {k: b64(v) for k, v in data.items()},
    }


def call(api: Any, method: str, path: str, body: Any = None) -> Any:
    """One request through the kubernetes client's ApiClient (its REST layer, auth and pool),
    JSON in and out: the generated API classes cost ~2 s of imports and model building."""
    _, url, headers, data, post = api.param_serialize(
        method=method,
        resource_path=path,
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=data, post_params=post)
    raw = response.read()
    if response.status >= 400:
        raise RuntimeError(f"{method} {path}: {response.status} {raw[:300]!r}")
    return json.loads(raw) if raw else None


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baseline")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--sts-concurrency", type=int, default=8)
    p.add_argument("--sts-rate", type=float, default=200.0)
    p.add_argument("--sts-burst", type=int, default=20)
    args = p.parse_args()
    imported = time.monotonic()

    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = args.workers + 4
    api = kubernetes.client.ApiClient(cfg)
    sts = boto3.session.Session().client(  # the operator passes its region too
        "sts",
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, max_pool_connections=32),
    )
    bucket = Bucket(args.sts_rate, args.sts_burst)
    slots = threading.Semaphore(max(1, args.sts_concurrency))

    clients = time.monotonic()
    items: list[dict[str, Any]] = []
    token = None
    while True:
        query = {"limit": "500", **({"continue": token} if token else {})}
        page = call(api, "GET", f"/apis/rolecall.dev/v1alpha1/assumedroles?{urlencode(query)}")
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            break
    listed = time.monotonic()

    def one(ar: dict[str, Any]) -> None:
        meta, spec = ar["metadata"], ar["spec"]
        ns, name = meta["namespace"], meta["name"]
        tags = [
            {"Key": "kubernetes-namespace", "Value": ns},
            {"Key": "rolecall-assumed-role", "Value": name},
        ] + [{"Key": k, "Value": v} for k, v in (spec.get("sessionTags") or {}).items()]
        with slots:
            bucket.acquire()
            answer = sts.assume_role(
                RoleArn=spec["roleArn"],
                RoleSessionName=f"{ns}.{name}",
                DurationSeconds=spec.get("durationSeconds", 3600),
                Tags=tags,
                TransitiveTagKeys=["kubernetes-namespace", "rolecall-assumed-role"],
            )
        call(api, "POST", f"/api/v1/namespaces/{ns}/secrets", secret_body(ar, answer["Credentials"]))

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for future in [pool.submit(one, ar) for ar in items]:
            future.result()
    done = time.monotonic()
    print(
        json.dumps(
            {
                "objects": len(items),
                "import_s": round(imported - T0, 3),
                "clients_s": round(clients - imported, 3),
                "list_s": round(listed - clients, 3),
                "work_s": round(done - listed, 3),
                "total_s": round(done - T0, 3),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
