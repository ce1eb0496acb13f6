"""A task that is told to stop, stops: the worker's and the hub's loops end on
cancellation even when it comes in the same instant as what they wait for.

On Python 3.11 ``asyncio.wait_for`` returns the awaited result, swallowing
the cancellation, when the awaited thing completed in the tick the task was
cancelled; a ``while True`` loop around it then runs on, and whoever waits
for it waits for ever. That was a worker that did not exit after SIGTERM:
its fence loop was cancelled as a heartbeat's acknowledgement woke it.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from tether.worker.attempt import AttemptRunner
from tether.worker.fence import Fence

SOURCE = Path(__file__).parents[2] / "src" / "tether"


async def _cancelled_as_it_wakes(loop_task: asyncio.Task[None], wake: object) -> bool:
    """Cancel ``loop_task`` in the tick that ``wake()`` woke it; whether it ended."""
    await asyncio.sleep(0.01)  # it waits now
    wake()  # type: ignore[operator]
    await asyncio.sleep(0)  # what it waited for is done...
    loop_task.cancel()  # ...and the cancellation comes in the same tick
    done, _ = await asyncio.wait({loop_task}, timeout=2)
    if not done:
        loop_task.cancel()  # do not leave it behind
        await asyncio.wait({loop_task}, timeout=2)
    return bool(done) and loop_task.cancelled()


def test_the_fence_loop_ends_when_cancelled_as_an_acknowledgement_wakes_it() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        fence = Fence(kill_grace=1.0)
        fence.start(60.0, loop.time())
        watching = asyncio.create_task(fence.watch(lambda reason: 0))
        return await _cancelled_as_it_wakes(watching, lambda: fence.acknowledged(loop.time()))

    assert asyncio.run(main())


def test_an_attempt_cancelled_while_it_stops_its_log_shipping_stays_cancelled(
    tmp_path: Path,
) -> None:
    """The attempt's end cancels its log shipper and waits for it; a cancellation
    of the attempt itself in that wait goes on up, it is not taken for the
    shipper's own."""

    async def main() -> bool:
        release = asyncio.Event()

        class Shipper:
            async def run(self, interval: float) -> None:
                try:
                    await asyncio.sleep(3600)
                finally:
                    await release.wait()  # a shipment that takes a moment to let go

        runner = AttemptRunner.__new__(AttemptRunner)
        finished = asyncio.Event()

        async def attempt() -> None:
            shipping = asyncio.create_task(Shipper().run(0.5))
            await asyncio.sleep(0)
            try:
                await runner._stop_shipping(shipping)
            finally:
                finished.set()

        task = asyncio.create_task(attempt())
        await asyncio.sleep(0.01)
        task.cancel()  # the worker gives up on the attempt while it waits
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.wait({task}, timeout=2)
        return task.done() and task.cancelled()

    assert asyncio.run(main())


def _wait_for_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "wait_for"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "asyncio"
    ]


def test_no_code_of_ours_calls_asyncio_wait_for() -> None:
    found = {
        str(path.relative_to(SOURCE)): lines
        for path in sorted(SOURCE.rglob("*.py"))
        if (lines := _wait_for_calls(path))
    }
    assert found == {}, "use `async with asyncio.timeout(...)` instead (see the module's docstring)"


def test_the_scan_finds_a_wait_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import asyncio\nasync def f(x):\n    await asyncio.wait_for(x, 1)\n")
    assert _wait_for_calls(sample) == [3]
