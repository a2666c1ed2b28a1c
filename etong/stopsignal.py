"""SIGTERM and SIGINT from the first moment of `etong run`, before the event loop exists.

Python leaves SIGTERM at its default (the process dies by the signal) and turns SIGINT into
KeyboardInterrupt. Between the launch of `etong run` and the daemon's `loop.add_signal_handler`
lie the imports, the config load and the event loop's creation; a stop asked for then must
still end the process with exit 0 (systemd's `TimeoutStopSec`, issue 9 item 5). `EarlyStop`
records it; the daemon reads it once its loop handles the signals, and never starts serving.

Standard library only: this module is imported before anything heavy.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class EarlyStop:
    """Records a stop signal that arrives while no event loop handles the signals."""

    def __init__(self) -> None:
        self.signal: int | None = None
        """The first stop signal received (its number), or None."""

    @classmethod
    def install(cls) -> EarlyStop:
        """Record SIGTERM and SIGINT from now on (until the event loop takes them over)."""
        early = cls()
        early.reinstall()
        return early

    def reinstall(self) -> None:
        """Record again: after the event loop closed, which resets the handlers to default."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._record)

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signal is not None

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signum
