"""The state diagrams of ``docs/architecture.md``, drawn from the tables in ``states``.

``python -m tether.hub.core.state_docs --write-docs`` rewrites each
machine's block in the file; ``tests/unit/test_states.py`` regenerates them
and fails when the file differs, so a change to a table that is not in the
docs fails the suite. The drawing lives here, apart from the tables, because
the hub never needs it.

A block sits between ``<!-- state-machine: NAME -->`` and
``<!-- /state-machine: NAME -->``. Automatic moves are drawn as a mermaid
``stateDiagram-v2``; moves made by hand (marks, clears, revokes) are listed in
a table under it, since drawn from every state they would hide the rest.
"""

from __future__ import annotations

import argparse
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from tether.hub.core.states import ATTEMPT, RUN, TASK, WORKER, Machine, state_name

E = TypeVar("E", bound=StrEnum)

MACHINES: dict[str, Machine[Any]] = {"task": TASK, "run": RUN, "attempt": ATTEMPT, "worker": WORKER}
DOCS = Path(__file__).resolve().parents[4] / "docs" / "architecture.md"


def mermaid(machine: Machine[E]) -> str:
    """The machine's automatic moves as a mermaid ``stateDiagram-v2``."""
    lines = ["```mermaid", "stateDiagram-v2"]
    if machine.group is not None:
        name, members = machine.group
        lines.append(f"    state {name} {{")
        lines += [f"        {m}" for m in members]
        lines.append("    }")
    if machine.waiting is not None:
        lines.append(f"    [*] --> none: {machine.waiting}")
    for move in machine.moves:
        if move.by_hand:
            continue
        for source in _ends(machine, move.sources):
            for target in _ends(machine, move.targets):
                lines.append(f"    {source} --> {target}: {move.label}")
    lines.append("```")
    return "\n".join(lines)


def by_hand_table(machine: Machine[E]) -> str:
    """The operators' moves, as a markdown table."""
    rows = ["| reason | from | to | what |", "| --- | --- | --- | --- |"]
    for move in machine.moves:
        if move.by_hand:
            froms = ", ".join(state_name(s) for s in move.sources)
            tos = ", ".join(state_name(t) for t in move.targets)
            rows.append(f"| `{move.reason}` | {froms} | {tos} | {move.label} |")
    return "\n".join(rows)


def _ends(machine: Machine[E], states: tuple[E | None, ...]) -> list[str]:
    """The names one end of a move is drawn with: the group's once for all its members."""
    none = "[*]" if machine.waiting is None else "none"
    names = [state_name(s) if s is not None else none for s in states]
    if machine.group is not None and set(machine.group[1]) <= set(states):
        name, members = machine.group
        names = [name] + [n for n in names if n not in members]
    return names


def render_docs(text: str) -> str:
    """``text`` with each machine's block drawn afresh from its table.

    A missing marker is an error, so the docs cannot silently lose a diagram.
    """
    for key, machine in MACHINES.items():
        begin, end = f"<!-- state-machine: {key} -->", f"<!-- /state-machine: {key} -->"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        found = pattern.search(text)
        if found is None:
            raise ValueError(f"no {begin} … {end} block")
        body = mermaid(machine)
        if any(m.by_hand for m in machine.moves):
            body += "\n\nBy hand (not drawn):\n\n" + by_hand_table(machine)
        text = f"{text[: found.start()]}{begin}\n{body}\n{end}{text[found.end() :]}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the state machines into the docs.")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite the blocks in {DOCS}")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the file to rewrite")
    args = parser.parse_args(argv)
    if not args.write_docs:
        for machine in MACHINES.values():
            print(mermaid(machine))
        return 0
    args.docs.write_text(render_docs(args.docs.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
