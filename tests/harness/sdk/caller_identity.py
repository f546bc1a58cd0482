"""STS GetCallerIdentity with boto3's default credential chain, as an application calls it.

    python caller_identity.py [--endpoint-url URL] [--count N] [--interval S]

The Python twin of ``caller_identity.js``: one JSON line per call, ``{"ok": true, "arn": ...,
"accessKeyId": ..., "sdk": <botocore version>}`` (the key id from the SigV4 header of the
request actually sent) or ``{"ok": false, "error": ...}``. ``--endpoint-url`` is passed to
the client (botocore before 1.31 ignores ``AWS_ENDPOINT_URL_STS``). ``--count 0`` loops until stopped; one client for the whole
run, so a rotation is only seen through botocore's own refresh. Stdlib + boto3 only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

import boto3
import botocore

_CREDENTIAL = re.compile(r"Credential=([^/]+)/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1, help="0: until stopped")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--endpoint-url", default=None)
    args = parser.parse_args(argv)

    client = boto3.session.Session().client("sts", endpoint_url=args.endpoint_url)
    used: dict[str, str | None] = {"key": None}

    def capture(request: Any, **_: Any) -> None:
        auth = request.headers.get("Authorization") or b""
        text = auth.decode() if isinstance(auth, bytes) else str(auth)
        match = _CREDENTIAL.search(text)
        used["key"] = match.group(1) if match else None

    client.meta.events.register("before-send.sts.GetCallerIdentity", capture)

    ok = False
    n = 0
    while True:
        n += 1
        used["key"] = None
        try:
            answer = client.get_caller_identity()
        except Exception as exc:  # report and keep going: the test decides
            ok = False
            record: dict[str, Any] = {"ok": ok, "error": f"{type(exc).__name__}: {exc}"}
        else:
            ok = True
            record = {"ok": ok, "arn": answer["Arn"], "accessKeyId": used["key"], "sdk": botocore.__version__}
        print(json.dumps(record), flush=True)
        if args.count and n >= args.count:
            break
        time.sleep(args.interval)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
