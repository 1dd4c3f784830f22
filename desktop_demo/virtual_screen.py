"""A virtual X screen (Debian's Xvfb) for running the app with no display: tests, benchmarks, CI."""

from __future__ import annotations

import os
import shutil
import subprocess


def start(size: str = "1280x900x24") -> tuple[subprocess.Popen, str]:
    """Start Xvfb on a free display number; (its process, the DISPLAY value). Stop it with
    terminate() when done."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise RuntimeError("Xvfb is not installed: apt-get install xvfb (make install does, as root)")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", size, "-nolisten", "tcp"], pass_fds=(write,),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()  # Xvfb writes the display it took once it is ready
    if not number:
        proc.kill()
        raise RuntimeError("Xvfb did not start")
    return proc, f":{number}"
