"""The demo stack's child processes: started in their own process group, stopped by pid.

Every child gets its own process group, so a Ctrl-C in the terminal reaches only the
orchestrator, which then stops the children itself in reverse start order (SIGTERM to the
child's group, a bounded wait, then SIGKILL). Where ``setpriv`` exists a child also gets
SIGTERM from the kernel if the orchestrator dies without cleaning up (``--pdeathsig``).

SIGINT and SIGTERM raise :class:`StopRequested` in the main thread, except while a child is
being started: a signal then waits until the child is registered, so no process can be forked
and forgotten. During the cleanup a further signal only shortens the waits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

#: Lines of a log quoted in an error message.
TAIL_LINES: Final = 25
#: A child's stop: SIGTERM, this long to exit, then SIGKILL.
DEFAULT_STOP_TIMEOUT: Final = 10.0
#: The wait after SIGTERM once a second signal asked to hurry.
HURRIED_STOP_TIMEOUT: Final = 1.0
_POLL: Final = 0.05


class StackError(Exception):
    """The stack could not start, or a part of it stopped; the message says where to look."""


class StopRequestedError(BaseException):
    """SIGINT or SIGTERM: stop the stack (not an ``Exception``: nothing may swallow it)."""

    def __init__(self, signum: int) -> None:
        """Remember which signal asked."""
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """SIGINT and SIGTERM for the orchestrator's main thread."""

    def __init__(self) -> None:
        """Nothing is installed until :meth:`install`."""
        self.received: int | None = None
        self._deferring = 0
        self._stopping = False

    def install(self) -> None:
        """Route SIGINT and SIGTERM to :meth:`_handle`."""
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    @property
    def hurry(self) -> bool:
        """A signal arrived while stopping: shorten the waits."""
        return self._stopping and self.received is not None

    def stopping(self) -> None:
        """From now on a signal only makes the cleanup hurry."""
        self._stopping = True
        self.received = None

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a signal until the block ends (a child is forked and registered in it)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        self._raise_pending()

    def _raise_pending(self) -> None:
        if self._deferring == 0 and not self._stopping and self.received is not None:
            raise StopRequestedError(self.received)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum
        self._raise_pending()


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The end of a log, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(f"    {line}" for line in text) or f"({path} is empty)"


@dataclass(slots=True)
class Child:
    """One process of the stack."""

    key: str
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_timeout: float

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self.process.pid

    def exited(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.process.poll()

    def died_error(self, when: str) -> StackError:
        """The error for a child that exited on its own."""
        return StackError(
            f"{self.name} (pid {self.pid}) exited with code {self.process.returncode} {when}. "
            f"Its log is {self.log_path}; the end of it:\n{log_tail(self.log_path)}"
        )


@dataclass(slots=True)
class Supervisor:
    """Starts, watches and stops the stack's processes; logs go to ``logs_dir/<key>.log``."""

    logs_dir: Path
    signals: Signals
    env: dict[str, str]
    out: TextIO
    children: list[Child] = field(default_factory=list)
    _pdeathsig: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        """Find ``setpriv`` (util-linux) for the parent-death signal."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            self._pdeathsig = (setpriv, "--pdeathsig", "TERM", "--")

    def log_path(self, key: str) -> Path:
        """Where a child's output goes."""
        return self.logs_dir / f"{key}.log"

    def spawn(
        self,
        key: str,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        stdin: int = subprocess.DEVNULL,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        log_key: str | None = None,
    ) -> Child:
        """Start ``argv`` in its own process group with its output appended to its log."""
        log_path = self.log_path(log_key or key)
        with self.signals.deferred(), log_path.open("ab") as log:
            log.write(
                f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {name}: {' '.join(argv)}\n".encode()
            )
            log.flush()
            process = subprocess.Popen(  # noqa: S603 - our own commands
                [*self._pdeathsig, *argv],
                stdin=stdin,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=self.env,
                process_group=0,
            )
            child = Child(key, name, process, log_path, stop_timeout)
            self.children.append(child)
        return child

    def run(
        self,
        key: str,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        stdin_text: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        """Run a one-shot command to completion; its output goes to the ``setup`` log."""
        self.wait_all([self.start_step(key, name, argv, cwd=cwd, stdin_text=stdin_text)], timeout)

    def start_step(
        self,
        key: str,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        stdin_text: str | None = None,
    ) -> Child:
        """Start a one-shot command (wait for it with :meth:`wait_all`)."""
        child = self.spawn(
            key,
            name,
            argv,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            log_key="setup",
        )
        if stdin_text is not None and child.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                child.process.stdin.write(stdin_text.encode())
            child.process.stdin.close()
        return child

    def wait_all(self, steps: Sequence[Child], timeout: float) -> None:
        """Wait for one-shot commands; any failure is a :class:`StackError` naming the log."""
        deadline = time.monotonic() + timeout
        for step in steps:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                code = step.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                raise StackError(
                    f"{step.name} did not finish within {timeout:.0f} s. Its log is "
                    f"{step.log_path}; the end of it:\n{log_tail(step.log_path)}"
                ) from None
            self.children.remove(step)
            if code != 0:
                raise step.died_error("while setting up")

    def check(self, when: str) -> None:
        """Raise for the first long-running child that is no longer running."""
        for child in self.children:
            if child.exited() is not None:
                raise child.died_error(when)

    def wait_until(
        self, child: Child, ready: Callable[[], bool], *, timeout: float, what: str
    ) -> float:
        """Poll ``ready`` until it holds; fail early if the child exits. Returns seconds."""
        started = time.monotonic()
        while not ready():
            if child.exited() is not None:
                raise child.died_error("while starting")
            if time.monotonic() - started > timeout:
                raise StackError(
                    f"{child.name} (pid {child.pid}) did not {what} within {timeout:.0f} s. "
                    f"Its log is {child.log_path}; the end of it:\n{log_tail(child.log_path)}"
                )
            time.sleep(0.1)
        return time.monotonic() - started

    def stop_all(self) -> None:
        """Stop every child, newest first: SIGTERM to its group, wait, SIGKILL."""
        while self.children:
            child = self.children.pop()
            started = time.monotonic()
            how = "killed" if self._stop(child) else "stopped"
            self.out.write(
                f"  {how} {child.name} (pid {child.pid}) in {time.monotonic() - started:.1f} s\n"
            )
            self.out.flush()

    def _stop(self, child: Child) -> bool:
        """Stop one child and anything left in its process group; True if SIGKILL was needed."""
        if child.process.poll() is None:
            _signal_group(child.pid, signal.SIGTERM)
            deadline = time.monotonic() + child.stop_timeout
            while child.process.poll() is None and time.monotonic() < deadline:
                if self.signals.hurry:
                    deadline = min(deadline, time.monotonic() + HURRIED_STOP_TIMEOUT)
                time.sleep(_POLL)
        forced = child.process.poll() is None
        # Grandchildren stay in the group after the leader exits; the group goes as a whole.
        _signal_group(child.pid, signal.SIGKILL)
        child.process.wait()
        return forced


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
