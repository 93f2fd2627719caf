"""A simulated machine's serial port, as the outside sees it (BMC SOL, a console server's port).

Whatever the machine prints goes to every attached sink; bytes fed in are what someone typed.
The firmware behind it (POST screen, BIOS setup, login prompt) lives in `sim.firmware`.
"""

from __future__ import annotations

from collections.abc import Callable

Sink = Callable[[bytes], None]


class SerialLine:
    """One serial port: fan-out of output to attached sinks, input to the machine's handler."""

    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        self._input: Sink = lambda data: None
        self._on_break: Callable[[], None] = lambda: None
        self.breaks = 0  # how many breaks arrived, for tests

    def attach(self, sink: Sink) -> Callable[[], None]:
        """Receive the machine's output from now on; call the result to detach."""
        self._sinks.append(sink)

        def detach() -> None:
            if sink in self._sinks:
                self._sinks.remove(sink)

        return detach

    def feed(self, data: bytes) -> None:
        """Bytes arriving at the machine (keystrokes from SOL or a console server port)."""
        self._input(data)

    def send_break(self) -> None:
        self.breaks += 1
        self._on_break()

    # The machine's side ---------------------------------------------------------------------

    def emit(self, data: bytes) -> None:
        for sink in list(self._sinks):
            sink(data)

    def on_input(self, handler: Sink, on_break: Callable[[], None] | None = None) -> None:
        self._input = handler
        if on_break is not None:
            self._on_break = on_break
