"""Ctrl+C and SIGTERM for a long command (`up`): the CLI's side of cancellation.

The core never sees a signal. It gets a cancellation token (a threading.Event) and looks
at it between units of work (shopctl.orchestrate.apply_up, the image builds), raising
shopctl.errors.Cancelled once it is set. Here:

- the first SIGINT or SIGTERM sets the token; the command then says, in one line on
  stderr, what of the project runs now and that `shopctl down` removes it, and exits
  128 + the signal's number (130, 143). Should the core not be out within DEADLINE
  seconds (a step that does not look at the token: a pip download, a base image's
  debootstrap), a watchdog thread says the same and exits;
- a second signal exits at once with that code (the terminal's cursor restored), no
  traceback.

Exits are os._exit after flushing: worker threads still blocked in a call to the engine
would otherwise be joined at interpreter exit (today's slow exit, and the second
Ctrl+C's "Exception ignored in: <module 'threading'>").
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

DEADLINE = 1.5  # seconds from the first signal to the exit, at the latest
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """A context manager owning SIGINT and SIGTERM while it is open (main thread only).

    `cancel` is the token to hand to the core; `finish()` says what is left (through
    `say`, given the exit code) and exits; `view` (optional, with an `abort()` method)
    is the live view to stop before saying it.
    """

    def __init__(self, say: Callable[[], None], deadline: float = DEADLINE):
        self.cancel = threading.Event()
        self.code = 130
        self.view = None
        self._say = say
        self._deadline = deadline
        self._finishing = threading.Lock()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interrupts:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.cancel.is_set():  # the second one: out at once
            _show_cursor()
            os._exit(self.code)
        self.code = 128 + signum
        self.cancel.set()
        threading.Thread(target=self._watchdog, name="shopctl-interrupt", daemon=True).start()

    def _watchdog(self) -> None:
        threading.Event().wait(self._deadline)
        self.finish()

    def finish(self) -> None:
        """Stop the view, say what runs, exit with the signal's code. Called by the
        command once the core raised Cancelled, or by the watchdog; the first wins."""
        if not self._finishing.acquire(blocking=False):
            threading.Event().wait()  # the other one is exiting the process
        try:
            if self.view is not None:
                self.view.abort()
            self._say()
        except BaseException:  # noqa: BLE001 - the exit code is the promise; the word is best effort
            pass
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            os._exit(self.code)


def _show_cursor() -> None:
    """rich's live view hides the cursor; give it back without touching rich's locks
    (the signal may have come while this thread holds them)."""
    try:
        if os.isatty(2):
            os.write(2, b"\x1b[?25h\n")
    except OSError:
        pass
