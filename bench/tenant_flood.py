"""One tenant cannot degrade the hub for another: a victim's heartbeat latency
with and without a flood from another credential.

Starts ``tether hub`` in a temporary home (SQLite by default; set
TETHER_DATABASE_URL for PostgreSQL) and enrols two workers through the real
API. The victim speaks the protocol as a worker does (a session, one held
poll, a heartbeat every ``--interval`` s, timed) and the REST API is timed
too. First ``--seconds`` without a flood, then as long with one: a separate
process holds ``--polls`` polls open with the attacker's own credential
(opening a new one whenever one is answered) and sends that credential's
heartbeats ten times a second; another sends made-up credentials from
``--guessers`` loops as fast as the hub answers them.

Prints a table and a final JSON line. Usage:
    python3 -m uv run python bench/tenant_flood.py [--seconds 15] [--polls 300] [--guessers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ADMIN = "bench-admin-token-" + "x" * 24
PROTOCOL = {"version": "0.1.0", "protocol": 1}
FACTS = {"concurrency": 4, "free_slots": 4, **PROTOCOL}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _enrol(api: httpx.Client, url: str, name: str, queue: str) -> tuple[str, str]:
    token = api.post("/workers/enrolment-tokens", json={"queues": [queue], "name": name})
    credential = httpx.post(f"{url}/api/worker/v1/enrol", json={"token": token.json()["token"]})
    cred: str = credential.json()["credential"]
    started = httpx.post(
        f"{url}/api/worker/v1/sessions", json=FACTS, headers={"Authorization": f"Bearer {cred}"}
    )
    return cred, started.json()["session_id"]


async def _victim(url: str, cred: str, session: str, seconds: float, interval: float) -> dict:
    """Heartbeats (and REST calls) timed for ``seconds``, one poll held throughout."""
    headers = {"Authorization": f"Bearer {cred}", "X-Tether-Session": session}
    beats: list[float] = []
    rest: list[float] = []
    errors: Counter[str] = Counter()
    async with (
        httpx.AsyncClient(base_url=f"{url}/api/worker/v1", headers=headers, timeout=60) as w,
        httpx.AsyncClient(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
        ) as api,
    ):

        async def hold_poll() -> None:
            while True:
                try:
                    await w.post("/poll", json={"slots": 4, "wait": 30})
                except httpx.HTTPError as exc:
                    errors[f"poll {type(exc).__name__}"] += 1

        poller = asyncio.create_task(hold_poll())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                answer = await w.post("/heartbeat", json=FACTS)
                if answer.status_code != 200:
                    errors[f"heartbeat {answer.status_code}"] += 1
                beats.append(time.monotonic() - start)
                start = time.monotonic()
                answer = await api.get("/workers")
                if answer.status_code != 200:
                    errors[f"rest {answer.status_code}"] += 1
                rest.append(time.monotonic() - start)
            except httpx.HTTPError as exc:
                errors[f"victim {type(exc).__name__}"] += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - start)))
        poller.cancel()
    return {
        "heartbeat_ms_p50": round(_pct(beats, 50) * 1000, 1),
        "heartbeat_ms_p99": round(_pct(beats, 99) * 1000, 1),
        "rest_ms_p50": round(_pct(rest, 50) * 1000, 1),
        "rest_ms_p99": round(_pct(rest, 99) * 1000, 1),
        "samples": len(beats),
        "errors": dict(errors),
    }


def _hold_polls(url: str, cred: str, session: str, polls: int, counts: Any) -> None:
    """The attacker's pollers, in their own process: ``polls`` polls kept open."""

    async def main() -> None:
        headers = {"Authorization": f"Bearer {cred}", "X-Tether-Session": session}
        async with httpx.AsyncClient(
            base_url=f"{url}/api/worker/v1",
            headers=headers,
            timeout=60,
            limits=httpx.Limits(max_connections=polls + 10),
        ) as http:

            async def poll_forever() -> None:
                while True:
                    try:
                        await http.post("/poll", json={"slots": 0, "wait": 30})
                        counts[0] += 1
                    except httpx.HTTPError:
                        counts[2] += 1

            async def beat_forever() -> None:
                # Its own heartbeats, ten a second: each woke every poll it held (the finding).
                while True:
                    try:
                        await http.post("/heartbeat", json=FACTS)
                        counts[4] += 1
                    except httpx.HTTPError:
                        counts[2] += 1
                    await asyncio.sleep(0.1)

            await asyncio.gather(beat_forever(), *(poll_forever() for _ in range(polls)))

    asyncio.run(main())


def _guess(url: str, guessers: int, counts: Any) -> None:
    """The attacker's guessers, in their own process: made-up credentials, flat out."""

    async def main() -> None:
        async with httpx.AsyncClient(base_url=f"{url}/api/worker/v1", timeout=60) as http:

            async def guess_forever() -> None:
                while True:
                    bogus = {"Authorization": f"Bearer ttw_{secrets.token_urlsafe(32)}"}
                    try:
                        answer = await http.post("/heartbeat", json=FACTS, headers=bogus)
                        counts[1] += 1
                        if answer.status_code == 429:
                            counts[3] += 1
                    except httpx.HTTPError:
                        counts[2] += 1

            await asyncio.gather(*(guess_forever() for _ in range(guessers)))

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--interval", type=float, default=0.2, help="victim heartbeat every S s")
    parser.add_argument("--polls", type=int, default=300, help="polls the attacker holds")
    parser.add_argument("--guessers", type=int, default=8, help="loops sending made-up tokens")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tether-flood-"))
    (root / "dags").mkdir()
    port = _port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TETHER_ADMIN_TOKEN": ADMIN}
    env.setdefault("TETHER_DATABASE_URL", f"sqlite:///{root / 'tether.db'}")
    log = (root / "hub.log").open("wb")
    hub = subprocess.Popen(
        [sys.executable, "-m", "tether", "hub", "--home", str(root / "hub")]
        + ["--dags", str(root / "dags"), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    attackers: list[multiprocessing.Process] = []
    api = httpx.Client(
        base_url=url + "/api/v1", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if api.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("hub did not come up; see " + str(root / "hub.log"))
            time.sleep(0.1)
        victim = _enrol(api, url, "victim", "victim-tenant")
        flooder = _enrol(api, url, "attacker", "attacker-tenant")
        quiet = asyncio.run(_victim(url, *victim, args.seconds, args.interval))
        # polls answered, guesses, errors, 429s, attacker heartbeats
        counts = multiprocessing.Array("q", 5)
        attackers = [
            multiprocessing.Process(
                target=_hold_polls, args=(url, *flooder, args.polls, counts), daemon=True
            ),
            multiprocessing.Process(target=_guess, args=(url, args.guessers, counts), daemon=True),
        ]
        for attacker in attackers:
            attacker.start()
        time.sleep(2.0)  # let the flood build up
        flooded = asyncio.run(_victim(url, *victim, args.seconds, args.interval))
        attack = {
            "attacker_polls_answered": counts[0],
            "attacker_guesses": counts[1],
            "attacker_guesses_429": counts[3],
            "attacker_errors": counts[2],
            "attacker_heartbeats": counts[4],
        }
    finally:
        for attacker in attackers:
            if attacker.is_alive():
                attacker.kill()
            attacker.join()
        api.close()
        if hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(30)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait()
        log.close()

    store = env["TETHER_DATABASE_URL"].split(":", 1)[0]
    print(f"store {store}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'':24} {'no flood':>12} {'flood':>12}")
    for key in ("heartbeat_ms_p50", "heartbeat_ms_p99", "rest_ms_p50", "rest_ms_p99", "samples"):
        print(f"{key:24} {quiet[key]:>12} {flooded[key]:>12}")
    print(f"victim errors: {quiet['errors'] or 'none'} / {flooded['errors'] or 'none'}")
    for key, value in attack.items():
        print(f"{key:24} {value}")
    print(
        json.dumps(
            {
                "bench": "tenant_flood",
                "store": store,
                "polls": args.polls,
                "guessers": args.guessers,
                "no_flood": quiet,
                "flood": flooded,
                **attack,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
