"""Progress bars: a bar on a terminal, whole lines (no carriage-return runs) in a log file."""

import io

from espnet2_almtok import progress as P


def test_a_log_file_gets_one_line_per_update_and_no_carriage_returns(monkeypatch):
    monkeypatch.setattr(P, "LOG_INTERVAL_S", 0.0)  # every update, to see them all
    log = io.StringIO()
    for _ in P.progress(range(50), file=log, desc="score", unit="utt"):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) >= 2 and lines[-1].startswith("score: 100%") and "50/50" in lines[-1]


def test_a_terminal_gets_tqdms_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    for _ in P.progress(range(5), file=term, desc="x"):
        pass
    assert "\r" in term.getvalue()
