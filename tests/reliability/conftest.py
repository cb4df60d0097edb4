"""Fixtures of the reliability suite: figures that every run prints at the end of its output.

A reliability test proves its claim with numbers (kills, records, duplicates and their bound;
memory and descriptors over a soak). `figures` collects them and `pytest_terminal_summary`
prints them in a "reliability figures" section of the normal pytest output, so they appear in
every CI log whether the tests pass or fail and without `-s`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

_FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Report one line of figures; every line is printed in the terminal summary."""

    def report(line: str) -> None:
        pytestconfig.stash.setdefault(_FIGURES, []).append(line)

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print the figures the reliability tests reported, if any ran."""
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.ensure_newline()
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
