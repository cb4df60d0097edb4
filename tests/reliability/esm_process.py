"""A real `esm run` subprocess: started, watched through its JSON log, killed or stopped, measured.

The reliability tests run the daemon exactly as an operator does (`python -m esm run --config
FILE --log-format json`), append its log to one file across restarts, and read its resource use
from /proc (Linux), as a monitoring agent would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EsmProcess", "ResourceSample"]


@dataclass(frozen=True, slots=True)
class ResourceSample:
    """What the process held at one moment: resident memory, open descriptors, sockets, threads."""

    at: float
    rss_kib: int
    fds: int
    sockets: int
    threads: int


class EsmProcess:
    """One `esm run` process for a config file; its stderr (JSON logs) is appended to `log`."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def pid(self) -> int:
        """The pid of the running process."""
        assert self._proc is not None, "start() first"
        return self._proc.pid

    def start(self, env: dict[str, str] | None = None) -> EsmProcess:
        """Start the daemon (with `env` added to its environment); what it logs from now on is read by `logged()`."""
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as err:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "esm", "run", "--config", str(self.config), "--log-format", "json"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**self.env, **(env or {})},
            )
        return self

    def logged(self, event: str) -> bool:
        """Whether this process (not an earlier one) logged `event` (e.g. "daemon_started")."""
        with self.log.open("rb") as f:
            f.seek(self._log_start)
            return f'"{event}"'.encode() in f.read()

    def exit_code(self) -> int | None:
        """The exit status if the process ended, else None."""
        assert self._proc is not None, "start() first"
        return self._proc.poll()

    def kill(self) -> None:
        """SIGKILL: no drain, no final checkpoint, no message returned; wait until it is gone."""
        assert self._proc is not None, "start() first"
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(30)

    def stop(self, within: float = 60) -> int:
        """SIGTERM, then wait for the graceful exit; returns the exit status."""
        assert self._proc is not None, "start() first"
        self._proc.send_signal(signal.SIGTERM)
        try:
            return self._proc.wait(within)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)
            raise AssertionError(f"esm did not exit within {within} s of SIGTERM; log: {self.tail()}") from None

    def tail(self, chars: int = 3000) -> str:
        """The end of the log, for failure messages."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def sample(self, at: float) -> ResourceSample:
        """Resident memory (VmRSS), open file descriptors, sockets among them, and threads, from /proc."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        fd_dir = Path(f"/proc/{self.pid}/fd")
        links = []
        for fd in fd_dir.iterdir():
            try:
                links.append(os.readlink(fd))
            except FileNotFoundError:  # closed between listing and reading
                continue
        return ResourceSample(
            at=at,
            rss_kib=int(fields["VmRSS"].split()[0]),
            fds=len(links),
            sockets=sum(link.startswith("socket:") for link in links),
            threads=int(fields["Threads"]),
        )
