"""The web console in a real browser: headless Chromium (Debian's ``chromium``,
driven by Playwright) against a real hub and worker on loopback.

One hub, one worker and one browser for the module (the browser first: without
it no hub is started). Without Chromium the tests
skip, except with CI set, where they fail (``.ci/run`` installs it). Screenshots
go to a folder the run prints.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest

from tests.integration.processes import ADMIN_TOKEN, Hub, running_hub, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"

#: Prints a line every 0.3 s until the test lets it finish (or 60 s pass).
TICKER = """
from tether import DAG, BashOperator
with DAG("ticker", tags=["demo"]):
    BashOperator(
        task_id="tick",
        bash_command=(
            "for i in $(seq 1 200); do echo tick $i; "
            "if [ -e {release} ]; then echo released; exit 0; fi; sleep 0.3; done; exit 1"
        ),
    )
"""

#: A DAG with a param, for the trigger form.
GREETER = """
from tether import DAG, BashOperator, Param
with DAG("greeter", params={"times": Param(1, type="integer", minimum=1, maximum=3)}):
    BashOperator(task_id="greet", bash_command="echo hello {{ params.times }} times")
"""

#: A diamond that succeeds, for the graph.
FAN = """
from tether import DAG, BashOperator
with DAG("fan"):
    a = BashOperator(task_id="a", bash_command="echo a")
    b = BashOperator(task_id="b", bash_command="echo b")
    c = BashOperator(task_id="c", bash_command="echo c")
    d = BashOperator(task_id="d", bash_command="echo d")
    a >> [b, c] >> d
"""
#: A task on a queue no worker serves: it waits, and the queues page warns.
STRANDED = """
from tether import DAG, BashOperator
with DAG("stranded"):
    BashOperator(task_id="wait", bash_command="true", queue="nowhere")
"""
#: Twelve tasks in a row: a graph wider than the window, scrolled in its box.
CHAIN = """
from tether import DAG, EmptyOperator, chain
with DAG("chain"):
    chain(*[EmptyOperator(task_id=f"step{i:02d}") for i in range(12)])
"""
#: The browser's time zone in the time zone test: 5 h 45 min from UTC, so that
#: no time shown as the hub sent it (UTC) can pass for the local one.
TIME_ZONE = "Asia/Kathmandu"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Path]]:
    root = tmp_path_factory.mktemp("console-browser")
    release = root / "release"
    dags = root / "dags"
    dags.mkdir()
    (dags / "ticker.py").write_text(TICKER.format(release=release))
    (dags / "greeter.py").write_text(GREETER)
    (dags / "fan.py").write_text(FAN)
    (dags / "stranded.py").write_text(STRANDED)
    (dags / "chain.py").write_text(CHAIN)
    waited = ["ticker", "greeter", "fan", "stranded", "chain"]
    with running_hub(root, "sqlite", None, dags, wait_dags=waited) as (hub, _):
        yield hub, release


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError as exc:  # pragma: no cover - playwright is a dev dependency
        _unavailable(f"playwright is not installed: {exc}")
    expect.set_options(timeout=20_000)  # detects what never shows; a busy machine is slow
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
        except Exception as exc:
            _unavailable(f"Chromium cannot start from {CHROMIUM}: {exc}")
        try:
            yield chromium
        finally:
            chromium.close()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: .ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("console-screenshots")
    print(f"\nconsole screenshots: {folder}")
    return folder


class Page:
    """A browser tab that records what the Content-Security-Policy refused."""

    def __init__(self, browser: Any, hub: Hub, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.tab = self.context.new_page()
        self.tab.set_default_timeout(20_000)  # detects a page that never gets there
        self.refused: list[str] = []
        self.tab.on(
            "console",
            lambda m: self.refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        self.hub = hub

    def sign_in(self, token: str) -> None:
        self.tab.goto(self.hub.url + "/")
        assert "/ui/login" in self.tab.url
        self.tab.fill("#token", token)
        self.tab.click("button[type=submit]")

    def close(self) -> None:
        self.context.close()


def test_sign_in_open_the_grid_and_follow_a_running_log(
    browser: Any, hub: tuple[Hub, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    server, release = hub
    page = Page(browser, server)
    tab = page.tab
    try:
        page.sign_in(ADMIN_TOKEN)
        expect(tab).to_have_url(re.compile(r"/ui/dags$"))
        expect(tab.locator("a.dag-id", has_text="ticker")).to_be_visible()
        tab.screenshot(path=shots / "dags.png", full_page=True)

        run_id = server.api.trigger("ticker")
        tab.click("a.dag-id:has-text('ticker')")
        expect(tab.locator("h1")).to_contain_text("ticker")

        def running_cell() -> bool:
            return _looks(tab, lambda: tab.locator("td.cell.state-running a").count() == 1)

        wait_for(running_cell, 30, "the grid to show the task running", interval=0.5)
        tab.screenshot(path=shots / "grid.png", full_page=True)
        tab.click("td.cell.state-running a")
        expect(tab.locator("#log-status")).to_have_text("Following live…")
        log = tab.locator("#log")
        expect(log).to_contain_text("tick")
        # A mark on this document: it is gone if the page reloads.
        tab.evaluate("window.stillTheSamePage = true")
        seen = len(re.findall(r"tick \d+", log.inner_text()))
        expect(log).to_contain_text(f"tick {seen + 3}")  # new lines, no reload
        assert tab.evaluate("window.stillTheSamePage") is True
        tab.screenshot(path=shots / "live-log.png", full_page=True)

        release.touch()
        # When the try ends the page shows it whole (it loads again, without the stream).
        wait_for(lambda: _reloaded(tab), 30, "the page to load again when the try ended")
        expect(tab.locator("#log-status")).to_have_count(0)
        expect(log).to_contain_text("released")
        expect(tab.locator("#log-download")).to_be_visible()
        expect(tab.locator("table.facts .mark")).to_have_text("success")
        tab.screenshot(path=shots / "ended-log.png", full_page=True)
        assert server.api.wait_run("ticker", run_id)["state"] == "success"
        assert page.refused == []
    finally:
        page.close()


#: What Playwright says when a page's own navigation cut a call short.
NAVIGATED = (
    "ERR_ABORTED",
    "frame was detached",
    "context was destroyed",
    "Not attached to an active page",  # the reload met the page's own, under load
)


def _looks(tab: Any, check: Callable[[], bool]) -> bool:
    """Load the tab's page again and ``check`` it; False if the page's own
    navigation got in the way. A task's page reloads itself half a second
    after its try ends (console.js): a reload asked in that instant is
    aborted (``net::ERR_ABORTED``), a look at the page destroyed. The caller
    looks again at its next poll."""
    from playwright.sync_api import Error

    try:
        tab.reload()
        return check()
    except Error as exc:
        if not any(words in str(exc) for words in NAVIGATED):
            raise
        return False


def _reloaded(tab: Any) -> bool:
    """Whether the tab holds a new document (the mark is gone). Not by
    ``wait_for_function``: that evaluates a string in the page, which the CSP forbids."""
    try:
        return bool(tab.evaluate("window.stillTheSamePage === undefined"))
    except Exception:  # the document changed while asked: ask again
        return False


def test_a_wrong_token_is_refused_in_the_browser(
    browser: Any, hub: tuple[Hub, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    server, _ = hub
    page = Page(browser, server)
    try:
        page.sign_in("not-the-admin-token")
        expect(page.tab.locator(".error")).to_have_text("invalid token")
        assert "/ui/login" in page.tab.url
        page.tab.screenshot(path=shots / "wrong-token.png")
        assert [c["name"] for c in page.context.cookies()] == ["tether_console_login"]
        page.tab.goto(server.url + "/ui/workers")
        assert "/ui/login" in page.tab.url
        assert page.refused == []
    finally:
        page.close()


def test_trigger_from_the_params_form_then_clear_the_task(
    browser: Any, hub: tuple[Hub, Path], shots: Path
) -> None:
    """The operator's path: a bad param is refused beside its field, a good one is
    confirmed and runs; clearing the task after a confirmation runs it again."""
    from playwright.sync_api import expect

    server, _ = hub
    page = Page(browser, server)
    tab = page.tab
    try:
        page.sign_in(ADMIN_TOKEN)
        tab.goto(server.url + "/ui/dags/greeter/grid")
        tab.click("#trigger")
        field = tab.locator('[name="param.times"]')
        expect(field).to_have_value("1")
        field.fill("9")
        tab.fill("#run_id", "from-the-form")
        tab.click("#trigger-form button[type=submit]")
        error = tab.locator('[data-param="times"] .field-error')
        expect(error).to_contain_text("maximum of 3")
        expect(field).to_have_value("9")  # what was typed is kept
        expect(tab.locator("#run_id")).to_have_value("from-the-form")
        tab.screenshot(path=shots / "trigger-field-error.png", full_page=True)
        field.fill("2")
        tab.click("#trigger-form button[type=submit]")
        expect(tab.locator("h1")).to_have_text("Trigger greeter?")
        expect(tab.locator("tr.param-value")).to_contain_text("2")
        tab.screenshot(path=shots / "trigger-confirm.png", full_page=True)
        assert server.api.get("/dags/greeter/runs")["dag_runs"] == []  # not before the button
        tab.click(".confirm-form button[type=submit]")
        expect(tab).to_have_url(re.compile(r"/ui/dags/greeter/grid$"))

        def success_cell() -> bool:
            return _looks(tab, lambda: tab.locator("td.cell.state-success a").count() == 1)

        wait_for(success_cell, 30, "the grid to show the task done", interval=0.5)
        tab.click("td.cell.state-success a")
        expect(tab.locator("#log")).to_contain_text("hello 2 times")
        tab.click("#clear-task")
        expect(tab.locator("tr.change")).to_have_count(1)
        expect(tab.locator("tr.change")).to_contain_text("greet")
        expect(tab.locator("tr.change")).to_contain_text("cleared: runs again")
        tab.screenshot(path=shots / "clear-confirm.png", full_page=True)
        assert server.api.run("greeter", "from-the-form")["tasks"][0]["try_number"] == 1
        tab.click(".confirm-form button[type=submit]")
        expect(tab).to_have_url(re.compile(r"/ui/dags/greeter/runs/from-the-form/tasks/greet$"))

        def second_try_done() -> bool:
            return _looks(
                tab,
                lambda: (
                    tab.locator("table.tries tbody tr").count() == 2
                    and tab.locator("table.facts .mark").inner_text() == "success"
                ),
            )

        wait_for(second_try_done, 30, "the cleared task to run again", interval=0.5)
        expect(tab.locator("#log")).to_contain_text("hello 2 times")
        tab.screenshot(path=shots / "cleared-ran-again.png", full_page=True)
        run = server.api.wait_run("greeter", "from-the-form")
        assert run["state"] == "success"
        assert run["conf"] == {"times": 2}
        assert page.refused == []
    finally:
        page.close()


def test_a_login_link_fills_the_token_in_but_signs_in_only_when_asked(
    browser: Any, hub: tuple[Hub, Path]
) -> None:
    """The link the hub prints (``/ui/login#token=...``) must not sign a browser in
    by itself: a page elsewhere could send a victim there with the attacker's
    token, and what the victim then did would be done in the attacker's name."""
    from playwright.sync_api import expect

    server, _ = hub
    page = Page(browser, server)
    tab = page.tab
    try:
        tab.goto(server.url + f"/ui/login#token={ADMIN_TOKEN}")
        expect(tab.locator("#from-link")).to_be_visible()
        assert tab.input_value("#token") == ADMIN_TOKEN
        assert "#" not in tab.url  # the token leaves the address bar and the history
        tab.wait_for_timeout(1000)  # time to submit, had the page meant to
        assert "/ui/login" in tab.url
        assert "tether_console" not in [c["name"] for c in page.context.cookies()]
        tab.click("button[type=submit]")
        expect(tab).to_have_url(re.compile(r"/ui/dags$"))
        assert page.refused == []
    finally:
        page.close()


def test_the_api_docs_render_with_nothing_from_outside_the_hub(
    browser: Any, hub: tuple[Hub, Path], shots: Path
) -> None:
    """``/docs`` (Swagger UI) in a browser that may reach the hub and no other host:
    every request to elsewhere is aborted and noted, and so is whatever the CSP
    refuses. Both documents render, their operations listed, with no token."""
    from playwright.sync_api import expect

    server, _ = hub
    page = Page(browser, server)
    elsewhere: list[str] = []

    def only_the_hub(route: Any) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_the_hub)
    tab = page.tab
    try:
        for path, title, operation in [
            ("/docs", "Tether REST API", "/api/v1/dags/{dag_id}/runs"),
            ("/docs/worker", "Tether worker API", "/api/worker/v1/poll"),
        ]:
            tab.goto(server.url + path)
            expect(tab.locator(".swagger-ui .info .title")).to_contain_text(title)
            expect(tab.locator(".opblock-summary-path", has_text=operation).first).to_be_visible()
            expect(tab.locator(".btn.authorize")).to_be_visible()  # the bearer schemes
            tab.screenshot(path=shots / f"api-docs{path.replace('/', '-')}.png", full_page=True)
        assert elsewhere == []
        assert page.refused == []
    finally:
        page.close()


#: The colours of console.css for a task that succeeded, as the browser computes them.
SUCCESS_FILL = "rgb(26, 127, 55)"


def test_the_graph_is_drawn_in_the_colours_of_its_run(
    browser: Any, hub: tuple[Hub, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    server, _ = hub
    run = server.api.run_dag("fan")
    assert run["state"] == "success"
    page = Page(browser, server)
    tab = page.tab
    try:
        page.sign_in(ADMIN_TOKEN)
        expect(tab).to_have_url(re.compile(r"/ui/dags$"))
        tab.goto(server.url + "/ui/dags/fan/graph")
        svg = tab.locator("svg.graph")
        expect(svg).to_be_visible()
        nodes = tab.locator("svg.graph g.node")
        expect(nodes).to_have_count(4)
        expect(tab.locator("svg.graph path.edge")).to_have_count(4)
        for task_id in "abcd":
            node = tab.locator(f'svg.graph g.node[data-task-id="{task_id}"]')
            expect(node).to_be_visible()
            box = node.bounding_box()
            assert box is not None
            assert box["width"] > 100
            assert box["height"] > 20
            # The state's colour comes from the style sheet (no inline style).
            fill = node.locator("rect").evaluate("r => getComputedStyle(r).fill")
            assert fill == SUCCESS_FILL, (task_id, fill)
        a, d = (tab.locator(f'g.node[data-task-id="{t}"]').bounding_box() for t in "ad")
        assert a is not None
        assert d is not None
        assert a["x"] + a["width"] < d["x"]  # drawn left to right
        stroke = tab.locator("svg.graph path.edge").first.evaluate(
            "p => getComputedStyle(p).stroke"
        )
        assert stroke == "rgb(140, 149, 159)"
        tab.screenshot(path=shots / "graph.png", full_page=True)
        tab.locator('svg.graph g.node[data-task-id="d"] a').click()
        expect(tab).to_have_url(re.compile(r"/tasks/d$"))
        expect(tab.locator("table.facts .mark")).to_have_text("success")
        assert page.refused == []
    finally:
        page.close()


def test_times_are_shown_in_the_browser_s_time_zone_and_near_ones_as_relative(
    browser: Any, hub: tuple[Hub, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    server, _ = hub
    run_id = server.api.trigger("fan")
    page = Page(browser, server, timezone_id=TIME_ZONE, locale="en-GB")
    tab = page.tab
    try:
        page.sign_in(ADMIN_TOKEN)
        expect(tab).to_have_url(re.compile(r"/ui/dags$"))
        tab.goto(server.url + f"/ui/dags/fan/graph?run_id={quote(run_id, safe='')}")
        shown = tab.locator("main p.muted time")
        expect(shown).to_have_text(re.compile(r"^\d+ (s|min) ago$"))
        sent = datetime.fromisoformat(shown.get_attribute("datetime") or "")
        assert sent.utcoffset() == timedelta(0)
        local = sent.astimezone(ZoneInfo(TIME_ZONE))
        assert shown.get_attribute("title") == local.strftime("%d/%m/%Y, %H:%M:%S")
        tab.screenshot(path=shots / "local-time.png")
        assert page.refused == []
    finally:
        page.close()


def test_the_queues_page_redraws_itself_without_a_reload(
    browser: Any, hub: tuple[Hub, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    server, _ = hub
    page = Page(browser, server)
    tab = page.tab
    try:
        page.sign_in(ADMIN_TOKEN)
        expect(tab).to_have_url(re.compile(r"/ui/dags$"))
        tab.goto(server.url + "/ui/queues")
        expect(tab.locator("table.queues")).to_contain_text("nowhere")
        expect(tab.locator(".unserved-queue")).to_have_count(0)
        tab.evaluate("window.stillTheSamePage = true")
        server.api.trigger("stranded")
        # The next refresh (every 5 s while the tab is visible) shows the warning.
        expect(tab.locator(".unserved-queue")).to_have_text("nowhere")
        assert tab.evaluate("window.stillTheSamePage") is True
        tab.screenshot(path=shots / "queues-refreshed.png", full_page=True)
        assert page.refused == []
    finally:
        page.close()


def test_a_refresh_keeps_where_a_wide_graph_was_scrolled(
    browser: Any, hub: tuple[Hub, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    server, _ = hub
    page = Page(browser, server)
    tab = page.tab
    try:
        page.sign_in(ADMIN_TOKEN)
        expect(tab).to_have_url(re.compile(r"/ui/dags$"))
        tab.goto(server.url + "/ui/dags/chain/graph")
        expect(tab.locator("svg.graph g.node")).to_have_count(12)
        box = tab.locator(".graph-wrap")
        assert box.evaluate("b => b.scrollWidth > b.clientWidth + 1000")
        box.evaluate("b => { b.scrollLeft = 1000; b.firstElementChild.dataset.old = 'yes'; }")
        # The next refresh swaps in a new drawing, scrolled where the old one was.
        expect(tab.locator("svg.graph")).not_to_have_attribute("data-old", "yes")
        assert tab.locator(".graph-wrap").evaluate("b => b.scrollLeft") == 1000
        tab.screenshot(path=shots / "graph-scrolled.png")
        assert page.refused == []
    finally:
        page.close()


def test_a_worker_put_in_maintenance_with_a_comment_shows_it_then_comes_back(
    browser: Any, hub: tuple[Hub, Path], shots: Path
) -> None:
    from playwright.sync_api import expect

    server, _ = hub
    page = Page(browser, server)
    tab = page.tab
    row = tab.locator("tr.worker", has=tab.locator("td.worker-name", has_text="w1"))
    try:
        page.sign_in(ADMIN_TOKEN)
        expect(tab).to_have_url(re.compile(r"/ui/dags$"))
        tab.goto(server.url + "/ui/workers")
        row.get_by_role("link", name="Maintenance on").click()
        expect(tab.locator("h1")).to_have_text("Maintenance on for worker w1?")
        tab.fill("#comment", "disk swap <b>tonight</b>")
        tab.click(".confirm-form button[type=submit]")
        expect(tab).to_have_url(re.compile(r"/ui/workers$"))
        # The page redraws itself: the comment shows, as text, without a reload.
        expect(row.locator(".maintenance")).to_have_text("disk swap <b>tonight</b>", timeout=60_000)
        wait_for(lambda: server.api.worker("w1")["state"] == "maintenance", 30, "w1 in maintenance")
        tab.screenshot(path=shots / "worker-maintenance.png", full_page=True)
        row.get_by_role("link", name="Maintenance off").click()
        tab.click(".confirm-form button[type=submit]")
        expect(row.locator(".maintenance")).to_have_count(0, timeout=60_000)
        assert page.refused == []
    finally:
        # The module's other tests need w1 taking work again.
        server.api.post("/workers/w1/maintenance", {"on": False})
        wait_for(lambda: server.api.worker("w1")["state"] != "maintenance", 30, "w1 back")
        page.close()
