"""The README's first command: the demo runs real example jobs through a real worker."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_demo_runs_example_jobs_on_a_private_server() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--private"],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, out + err
    assert "started a private redis-server" in out
    assert "refused at defer, nothing enqueued" in out
    assert "OK" in out.splitlines()[-1]
    for line in (
        "charged order 1001",
        "welcome email sent to grace@example.com",
        "delivered on retry 1",
        "report for",
    ):
        assert line in err, line
