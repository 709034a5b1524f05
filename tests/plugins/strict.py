"""A skipped test is a missing test: the run fails, so a missing service is never silent."""

from __future__ import annotations

import pytest
from _pytest.terminal import TerminalReporter


def _skipped(config: pytest.Config) -> list[pytest.TestReport]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return []
    return list(reporter.stats.get("skipped", []))


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    """Name every skipped test and why the run fails."""
    skipped = _skipped(terminalreporter.config)
    if skipped:
        terminalreporter.section("skipped tests fail this run", sep="=", red=True)
        for report in skipped:
            terminalreporter.line(f"{report.nodeid}: {report.longrepr}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Turn a green run with skips into a failure."""
    if exitstatus == pytest.ExitCode.OK and _skipped(session.config):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
