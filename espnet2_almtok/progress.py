"""Progress bars that keep logs readable.

On a terminal: tqdm's bar, as usual. Written to a file or pipe (a recipe's ``*.log``): tqdm at
one update every ``LOG_INTERVAL_S`` seconds (and the last), each on its own line, instead of
thousands of carriage-return redraws on one line that ``less`` and ``tail`` cannot show.
"""

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class _OneLinePerUpdate:
    """A stream for tqdm: each redraw (``\\r`` + text) becomes one line of ``stream``."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip("\n")
        if text.strip():
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, file=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal; one line per ``LOG_INTERVAL_S`` otherwise."""
    stream = file if file is not None else sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, file=stream, **kwargs)
    return tqdm(iterable, file=_OneLinePerUpdate(stream), mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S * 2,
                dynamic_ncols=False, ncols=100, **kwargs)
