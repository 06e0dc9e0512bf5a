"""A shutdown signal reaches the app first, then the server's own handler, while the app serves."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from bulwark.api.background import on_shutdown_signal


def test_the_app_hears_a_shutdown_signal_before_the_server_and_lets_go_after() -> None:
    heard: list[tuple[str, int | None]] = []

    def server(signum: int, frame: FrameType | None) -> None:
        heard.append(("server", signum))

    saved = {number: signal.signal(number, server) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with on_shutdown_signal(lambda: heard.append(("app", None))):
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)
        assert heard == [("app", None), ("server", signal.SIGTERM), ("app", None), ("server", signal.SIGINT)]
        # Once the app stops serving, the server's handlers are back and the app hears nothing.
        assert signal.getsignal(signal.SIGTERM) is server and signal.getsignal(signal.SIGINT) is server
        heard.clear()
        signal.raise_signal(signal.SIGTERM)
        assert heard == [("server", signal.SIGTERM)]
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def test_an_ignored_signal_stays_ignored_and_other_threads_change_nothing() -> None:
    saved = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        heard: list[str] = []
        with on_shutdown_signal(lambda: heard.append("app")):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM)
        assert heard == []

        def in_a_thread() -> None:
            with on_shutdown_signal(lambda: heard.append("app")):
                handlers.append(signal.getsignal(signal.SIGINT))

        handlers: list[object] = []
        before = signal.getsignal(signal.SIGINT)
        thread = threading.Thread(target=in_a_thread)
        thread.start()
        thread.join()
        assert handlers == [before]
    finally:
        signal.signal(signal.SIGTERM, saved)
