"""The progress bar draws on a terminal only, and log lines still arrive (filtered) around it."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import select
import struct
import termios

from tml.core.progress import ProgressBar

RECORD = {"loss": 0.5, "edges_per_s": 12345.0}


def open_terminal() -> tuple[int, int]:
    """A pseudo-terminal 120 columns wide (a fresh one has 0, and tqdm would draw nothing)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    return leader, follower


def read_all(fd: int) -> str:
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        out += os.read(fd, 65536)
    return out.decode()


def test_a_terminal_gets_a_bar_with_eta_and_edges_per_second() -> None:
    leader, follower = open_terminal()
    with os.fdopen(follower, "w") as terminal:
        bar = ProgressBar(2, 10, enabled=True, stream=terminal)
        for _ in range(8):
            bar.update()
        bar.show(RECORD)
        bar.close()
        terminal.flush()
        drawn = read_all(leader)
    os.close(leader)
    assert "10/10" in drawn and "edges_per_s=12,345" in drawn and "loss=0.5" in drawn
    assert "<00:00" in drawn, "tqdm's ETA (remaining time)"


def test_no_terminal_no_bar_and_logging_is_left_alone() -> None:
    handlers = logging.getLogger().handlers[:]
    stream = io.StringIO()  # CI, containers, redirected logs
    bar = ProgressBar(0, 10, enabled=True, stream=stream)
    bar.update()
    bar.show(RECORD)
    bar.close()
    assert stream.getvalue() == ""
    assert logging.getLogger().handlers == handlers


def test_log_lines_pass_through_their_handler_while_the_bar_runs() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.addFilter(lambda record: "noise" not in record.getMessage())
    root.handlers[:] = [handler]
    leader, follower = open_terminal()
    try:
        with os.fdopen(follower, "w") as terminal:
            bar = ProgressBar(0, 4, enabled=True, stream=terminal)
            logging.getLogger("tml").warning("checkpoint written")
            logging.getLogger("tml").warning("known noise")
            bar.close()
            assert root.handlers == [handler], "restored after close"
    finally:
        root.handlers[:] = saved
        os.close(leader)
    assert lines.getvalue() == "checkpoint written\n"
