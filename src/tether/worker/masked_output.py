"""The task process's stdout and stderr, written to its log through the secret mask.

``masked_output`` turns file descriptors 1 and 2 into the write end of a
pipe; a thread reads the pipe, replaces every value given to
``tether.mask_secret`` by ``***`` (``tether.sdk.masking.StreamRedactor``)
and writes the rest to the log file that 1 and 2 pointed at. Working on the
descriptors rather than on ``sys.stdout`` is what masks a subprocess too
(``subprocess.run``, ``os.system``, a ``bash`` that inherits them), and
C extensions that write to fd 1 directly.

What the thread guarantees:

- Nothing waits for long: the redactor holds back at most the byte length
  of the longest secret minus one (the start of a secret may be at the end
  of a write), and the thread writes those held bytes too once the pipe has
  been quiet for ``IDLE_FLUSH`` seconds.
- A secret split across writes (``print`` writes each argument on its own)
  is masked if its pieces come less than ``IDLE_FLUSH`` apart.
- Bytes are never decoded: undecodable output passes through unchanged.
- When the block ends, normally or by an exception, the process's own
  descriptors 1 and 2 are pointed at ``/dev/null`` (so the pipe's last
  writers are gone), and the thread writes everything left before the block
  returns.

What it cannot cover:

- Output after the block: the task process ends right after it, and what
  it still writes (interpreter shutdown, an atexit handler) is discarded
  rather than written unmasked.
- A process that outlives the task while holding the pipe (``cmd &`` in a
  bash command): the block waits ``EXIT_GRACE`` seconds for it, then writes
  what came and stops reading; that process's later writes are lost (and
  get EPIPE once the task process has exited).
- A task process killed by a signal (the worker's SIGTERM or SIGKILL) or
  ending with ``os._exit`` inside the block loses what the thread had not
  written yet: output of at most its last ``IDLE_FLUSH`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
from collections.abc import Iterator

from tether.sdk.masking import SecretMasker, StreamRedactor

#: Seconds of silence after which bytes held back (a possible secret's start) are written.
IDLE_FLUSH = 0.2
#: Seconds the end of the block waits for processes that still hold the pipe.
EXIT_GRACE = 1.0
_READ_SIZE = 65536


class _Channel:
    """One log file behind one or more of the descriptors 1 and 2, and its pipe."""

    def __init__(self, fds: list[int], masker: SecretMasker | None) -> None:
        self.fds = fds
        self.target = os.dup(fds[0])  # the log file; not inherited by subprocesses
        self.read, write = os.pipe()
        self._stop_read, self._stop_write = os.pipe()
        self.redactor = StreamRedactor(masker)
        for fd in fds:
            os.dup2(write, fd)  # inheritable: subprocesses write into the pipe too
        os.close(write)
        self.thread = threading.Thread(target=self._pump, name="tether-log-mask", daemon=True)
        self.thread.start()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.target, view)
            except InterruptedError:
                continue
            except OSError:
                return  # a full disk: the output is lost, but the task must not block on it
            view = view[written:]

    def _pump(self) -> None:
        poller = select.poll()
        poller.register(self.read, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        failed = False
        try:
            while True:
                idle = IDLE_FLUSH * 1000 if self.redactor.holding and not failed else None
                ready = {fd for fd, _ in poller.poll(idle)}
                data = os.read(self.read, _READ_SIZE) if self.read in ready else None
                if data == b"":
                    return  # every writer is gone
                if not failed:
                    try:
                        # Quiet (nothing ready): what was held back is no secret's start.
                        self._write(self.redactor.feed(data) if data else self.redactor.flush())
                    except Exception as exc:
                        # Never write unmasked output; go on reading so writers do not block.
                        failed = True
                        note = f"\n[tether] log masking failed ({exc!r}); output withheld\n"
                        self._write(note.encode())
                if self._stop_read in ready:
                    return
        except OSError:
            return
        finally:
            if not failed:
                self._write(self.redactor.flush())

    def stop(self, timeout: float) -> None:
        """Let the thread write everything, waiting ``timeout`` s for late writers; close."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            os.write(self._stop_write, b"x")
            self.thread.join()
        for fd in (self.read, self.target, self._stop_read, self._stop_write):
            os.close(fd)


def _channels(masker: SecretMasker | None) -> list[_Channel]:
    """One channel per distinct file behind fds 1 and 2 (one when both are the log)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for fd in (1, 2):
        try:
            stat = os.fstat(fd)
        except OSError:
            continue  # closed: nothing to mask
        groups.setdefault((stat.st_dev, stat.st_ino), []).append(fd)
    channels: list[_Channel] = []
    try:
        for fds in groups.values():
            channels.append(_Channel(fds, masker))
    except BaseException:
        _close(channels)
        raise
    return channels


def _close(channels: list[_Channel]) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for channel in channels:
            for fd in channel.fds:
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    for channel in channels:
        channel.stop(EXIT_GRACE)


@contextlib.contextmanager
def masked_output(masker: SecretMasker | None = None) -> Iterator[None]:
    """Mask fds 1 and 2 for the duration of the block (see the module's docstring).

    Usable as a decorator (``@masked_output()``) on the task process's entry
    point, so that everything it and its children write goes through the
    mask. A failure to set up the pipe is raised: a task must not run with
    its secrets unmasked.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # what was written before goes to the log first, in order
    channels = _channels(masker)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        _close(channels)
