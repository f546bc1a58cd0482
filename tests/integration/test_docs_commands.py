"""Every shell command in the operator docs, extracted from their ```sh blocks and run here
when it can be: `rolecall` commands (the CLI against the emulator and the local STS), `helm
lint`/`helm template`. Commands that need a real cluster tool against the emulator (kubectl,
helm install) or AWS itself are listed in PENDING with the reason; for those the test still
checks that every local path they name exists. Remove a PENDING entry to turn it on.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness.tools import ensure_helm

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docs/install.md", "docs/troubleshooting.md", "docs/aws-identity.md"]

# command prefix → why it does not run here yet
PENDING = {
    "kubectl": "needs real kubectl against the emulator (openapi, protobuf, Table output): another helper's work",
    "helm install": "needs helm install against the emulator (openapi, release Secret): another helper's work",
    "helm upgrade": "needs helm against the emulator: another helper's work",
    "helm uninstall": "needs helm against the emulator: another helper's work",
    "aws": "calls AWS itself",
    "eksctl": "calls AWS itself",
    "make": "the development targets are run by CI itself",
}


def commands() -> list[tuple[str, int, str, str | None]]:
    """(doc, line, command, the ```json block right after its ```sh block, if any)."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for match in re.finditer(r"```sh\n(.*?)```(?:\n\n```json\n(.*?)```)?", text, flags=re.S):
            line = text[: match.start()].count("\n") + 2
            logical = re.sub(r"\\\n\s*", " ", match.group(1))
            for raw in logical.splitlines():
                cmd = raw.strip()
                if not cmd or cmd.startswith("#"):
                    continue
                cmd = re.sub(r"\s+#\s.*$", "", cmd)  # trailing comment
                for part in cmd.split(" && "):
                    found.append((doc, line, part.strip(), match.group(2)))
    return found


def pending(cmd: str) -> str | None:
    return next(
        (why for prefix, why in PENDING.items() if cmd == prefix or cmd.startswith(prefix + " ")), None
    )


def local_paths(cmd: str) -> list[str]:
    words = shlex.split(cmd.replace("$(", "( "), posix=True)
    return [w for w in words if re.match(r"^(deploy|docs|scripts|tests)/", w)]


COMMANDS = commands()


def test_the_docs_have_commands() -> None:
    runnable = [c for _, _, c, _ in COMMANDS if not pending(c)]
    assert len(COMMANDS) > 20 and len(runnable) >= 8, COMMANDS
    assert any(j for _, _, c, j in COMMANDS if c.startswith("rolecall trust-policy")), (
        "the shown JSON is checked"
    )


@pytest.mark.parametrize(
    ("doc", "line", "cmd", "json_after"), COMMANDS, ids=[f"{d}:{n}:{c[:60]}" for d, n, c, _ in COMMANDS]
)
def test_doc_command(
    doc: str, line: int, cmd: str, json_after: str | None, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    for path in local_paths(cmd):
        assert (ROOT / path).exists(), f"{doc}:{line}: `{cmd}` names {path}, which does not exist"
    why = pending(cmd)
    if why:
        pytest.skip(why)
    words = shlex.split(cmd)
    env = dict(os.environ)
    if words[0] == "helm":
        words[0] = str(ensure_helm())
        if words[1] == "template":
            words += ["--kube-version", "1.33.0"]
    elif words[0] == "rolecall":
        words = [sys.executable, "-m", "rolecall.cli", *words[1:]]
        if words[3] in ("assume",):
            env.update(request.getfixturevalue("aws_env"))
        if words[3] == "doctor":
            request.getfixturevalue("crds")
            env["KUBECONFIG"] = str(request.getfixturevalue("kubeconfig_path"))
    else:
        raise AssertionError(f"{doc}:{line}: teach this test to run `{cmd}`, or add it to PENDING")
    done = subprocess.run(words, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=False)
    if "doctor" in cmd:
        # problems in the shared emulator are fine; the command must run and talk to it
        assert done.returncode in (0, 1) and "[ok  ] API server" in done.stdout, done.stdout + done.stderr
        return
    assert done.returncode == 0, f"{doc}:{line}: `{cmd}` failed:\n{done.stdout}\n{done.stderr}"
    if json_after is not None:
        shown: Any = json.loads(json_after)
        assert json.loads(done.stdout) == shown, (
            f"{doc}:{line}: the JSON shown differs from what `{cmd}` prints"
        )
