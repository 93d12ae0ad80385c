"""Run the ``mella`` command in a child process with stderr on a real pseudo-terminal (or a pipe), as a user's
shell would: the progress bars are drawn only at a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{REPO}"}


def mella(args: list[str], terminal: bool, timeout_s: float = 120) -> tuple[int, str]:
    """Run ``mella ARGS`` in a child process; returns its exit code and what it wrote to stderr (a pseudo-terminal
    when ``terminal``, else a pipe)."""
    command = [sys.executable, "-m", "mella_assets.cli", *args]
    if not terminal:
        child = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout_s)
        return child.returncode, child.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 24 x 120, as a terminal has
    child = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return child.wait(timeout=timeout_s), b"".join(chunks).decode("utf-8", "replace")
