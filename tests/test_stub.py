"""The type stub of the compiled module matches what it exports (mypy's
stubtest compares signatures, classes and names against the runtime)."""

import subprocess
import sys


def test_core_stub_matches_the_module(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "convpack._core"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # the installed package (and mypy's cache) away from the source tree
    )
    assert out.returncode == 0, out.stdout + out.stderr
