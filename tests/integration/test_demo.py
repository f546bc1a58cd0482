"""`make demo` is one of the two README commands a newcomer runs first: it must keep working.

Runs the demo exactly as `make demo` does (its own emulator, local STS, helm install, kubectl,
the real AWS CLI) and checks that it ends with the AWS CLI acting as the assumed role.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_make_demo_ends_with_the_aws_cli_acting_as_the_role() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KEEP"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.harness.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=560,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert (
        "the AWS CLI acted as arn:aws:sts::123456789012:assumed-role/team-a-s3-reader/team-a.s3-reader"
        in output
    ), output[-4000:]
