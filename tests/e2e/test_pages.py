"""The dashboard and the playground in a real browser (headless Chromium) against a real warmstart with
the real llama.cpp engine: the page's warm hint starts the model before any prompt, a prompt streams an
answer, the dashboard follows the start phase by phase."""

from __future__ import annotations

import re
import time
import urllib.parse

import pytest

from tests.e2e.conftest import browser_missing
from tests.support import GEMMA, smollm2

pytestmark = [pytest.mark.e2e, pytest.mark.integration,
              pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))]

MODEL = "smollm2-135m-instruct"
API_KEY = "e2e-api-key-0123456789"
# the phases a llama.cpp start reports, in order; "audit" is the audit record written before it is warm
LLAMACPP_PHASES = ["verify", "spawn", "import", "load", "kv_init", "warmup", "ready", "audit"]

# collects every value a row's data-state takes, so a state the page showed for one poll is not missed
WATCH_STATES = """name => {
  window.__seen = [];
  const row = document.querySelector(`tr[data-model="${name}"]`);
  const note = () => { const s = row.dataset.state; if (window.__seen.at(-1) !== s) window.__seen.push(s); };
  note();
  new MutationObserver(note).observe(row, { attributes: true, attributeFilter: ["data-state"] });
}"""


def metric(srv, name: str, **labels: str) -> float:
    status, _, body = srv.request("GET", "/metrics")
    assert status == 200
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.decode().splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[line.index("{") + 1:line.index("}")].split(",")))
            if got == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def until(page, expression: str, timeout: float = 60) -> None:
    """Wait until `expression` is true in the page (polled with evaluate: the pages' Content-Security-Policy
    forbids the string evaluation wait_for_function uses)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"{expression} still false after {timeout} s"
        page.wait_for_timeout(100)


def loopback_only(requests, srv) -> None:
    outside = [url for _, url, _ in requests if not url.startswith((srv.url + "/", "data:", "about:"))]
    assert outside == [], f"the pages fetched from elsewhere: {outside}"


def test_the_playground_warms_the_model_on_load_streams_a_warm_answer_and_the_dashboard_shows_the_start(
        start_server, browser, artifacts):
    srv = start_server([smollm2(keep_alive="10m")])
    assert srv.model(MODEL)["state"] == "cold"

    dash = browser.new_page()
    dash.goto(srv.url + "/")
    dash.wait_for_selector(f'tr[data-model="{MODEL}"][data-state="cold"]')
    dash.evaluate(WATCH_STATES, MODEL)

    play = browser.new_page()
    play.goto(srv.url + "/playground?model=" + urllib.parse.quote(MODEL))
    # no prompt yet: the page's hint alone starts the model
    warm = srv.wait_for(lambda: (m := srv.model(MODEL))["state"] == "warm" and m, timeout=180)
    assert not [u for _, u, _ in browser.requests if u.endswith("/v1/chat/completions")]
    assert warm["last_start"]["trigger"] == "hint" and warm["replicas"][0]["trigger"] == "hint"
    assert metric(srv, "warmstart_hints_total", model=MODEL, outcome="started") == 1
    # sent by /warmstart.js, the script a user's own page includes
    assert (("GET", srv.url + "/warmstart.js") in [(m, u) for m, u, _ in browser.requests])
    assert [m for m, u, _ in browser.requests if urllib.parse.urlsplit(u).path == "/v1/warm"]
    play.wait_for_selector('#state[data-state="warm"]')
    assert "ready" in play.text_content("#status")

    # the dashboard saw it go from cold through starting to warm, and draws that start's phases
    dash.wait_for_selector(f'tr[data-model="{MODEL}"][data-state="warm"]')
    seen = dash.evaluate("window.__seen")
    # cold to warm without a reload; "starting" shows when a poll lands inside the start (it lasts well under
    # a second here, about one poll), and if it was seen it came before warm
    assert seen[0] == "cold" and seen[-1] == "warm", seen
    assert "starting" not in seen or seen.index("starting") < seen.index("warm"), seen
    dash.click(f'tr[data-model="{MODEL}"]')
    dash.wait_for_selector(f'#detail[data-model="{MODEL}"] .laststart')
    bars = dash.eval_on_selector_all(".laststart .phase", "els => els.map(e => [e.dataset.phase, +e.dataset.seconds])")
    phases = warm["last_start"]["phases"]
    assert [p for p, _ in bars] == list(phases) == LLAMACPP_PHASES
    for name, seconds in bars:
        assert seconds == pytest.approx(phases[name], abs=1e-4)
    assert "by hint" in dash.text_content(".laststart h3")
    assert dash.text_content(f'tr[data-model="{MODEL}"] td:nth-child(5)').startswith("hint · ")

    # a prompt: the answer streams in, served warm without waiting
    play.fill("#prompt", "What is the capital of France? Answer in one sentence.")
    play.press("#prompt", "Enter")
    answer = play.wait_for_selector(".msg.assistant[data-done]", timeout=120_000)
    assert answer.get_attribute("data-done") == "true", play.text_content(".msg.assistant")
    assert answer.get_attribute("data-start") == "warm" and float(answer.get_attribute("data-wait-ms")) == 0.0
    assert int(answer.get_attribute("data-chunks")) > 1  # streamed: many SSE chunks, not one body
    assert len(answer.query_selector(".text").text_content().strip()) > 0
    assert "served warm" in answer.query_selector(".meta").text_content()
    chats = [body for m, u, body in browser.requests if u.endswith("/v1/chat/completions")]
    assert len(chats) == 1 and '"stream":true' in chats[0].replace(" ", "")

    # the cards count it: one request, served warm; the hint; one start
    until(dash, "document.getElementById('c-requests').textContent === '1'")
    assert dash.text_content("#c-ratio") == "100%"
    assert dash.text_content("#c-starts") == "1"
    assert int(dash.text_content("#c-hints")) >= 1 and "0 refused" in dash.text_content("#c-hints-sub")
    assert re.match(r"\d", dash.text_content("#c-cost"))

    dash.screenshot(path=str(artifacts / "dashboard.png"))
    play.screenshot(path=str(artifacts / "playground.png"))
    loopback_only(browser.requests, srv)


def test_a_refused_hint_leaves_the_model_cold_and_the_first_prompt_is_served_cold(start_server, browser, artifacts):
    srv = start_server([smollm2(), smollm2(name="other")], sections={"warming.hint": {"models": ["other"]}})
    play = browser.new_page()
    play.goto(srv.url + "/playground?model=" + MODEL)
    srv.wait_for(lambda: metric(srv, "warmstart_hints_total", model=MODEL, outcome="not_allowed") >= 1)
    assert srv.model(MODEL)["state"] == "cold"
    play.wait_for_selector('#state[data-state="cold"]')
    play.fill("#prompt", "Say hello.")
    play.click("#send")
    # held while the model starts: the page shows the state change while it waits
    play.wait_for_selector('#state[data-state="starting"]')
    answer = play.wait_for_selector(".msg.assistant[data-done]", timeout=180_000)
    assert answer.get_attribute("data-done") == "true"
    assert answer.get_attribute("data-start") == "cold" and float(answer.get_attribute("data-wait-ms")) > 0
    assert "served cold" in answer.query_selector(".meta").text_content()
    assert srv.model(MODEL)["last_start"]["trigger"] == "request"

    dash = browser.new_page()
    dash.goto(srv.url + "/")
    until(dash, "document.getElementById('c-requests').textContent === '1'")
    assert dash.text_content("#c-ratio") == "0%"
    assert "1 cold" in dash.text_content("#c-requests-sub")
    assert re.search(r"[1-9]\d* refused", dash.text_content("#c-hints-sub"))
    play.screenshot(path=str(artifacts / "playground-cold.png"))
    loopback_only(browser.requests, srv)


def test_the_dashboard_with_hundreds_of_models_asks_for_the_key_and_stays_usable(start_server, browser, artifacts):
    models = [smollm2(name=f"m-{i:03d}") for i in range(300)]
    srv = start_server(models, sections={"auth": {"api_keys": [API_KEY]}})
    page = browser.new_page()
    page.goto(srv.url + "/")
    page.wait_for_selector("#keyform:not([hidden])")
    page.fill("#keyinput", "not-the-key-0000000")
    page.press("#keyinput", "Enter")
    until(page, "document.getElementById('keymessage').textContent.includes('not accepted')")
    page.fill("#keyinput", API_KEY)
    page.click("#keyform button")
    page.wait_for_selector("#keyform", state="hidden")
    until(page, "document.querySelectorAll('#rows tr').length === 300")
    assert page.text_content("#counts") == "300 models: 300 cold"
    assert page.evaluate("sessionStorage.getItem('warmstart.apiKey')") == API_KEY

    page.fill("#filter", "m-29")
    until(page, "document.querySelectorAll('#rows tr').length === 10")
    assert page.eval_on_selector_all("#rows tr", "rs => rs.map(r => r.dataset.model)") == [
        f"m-{i}" for i in range(290, 300)]
    page.fill("#filter", "")
    page.select_option("#show", "warm")
    until(page, "document.querySelectorAll('#rows tr').length === 0")
    page.select_option("#show", "all")

    # the key stays for the tab: a reload goes straight to the data
    page.reload()
    until(page, "document.querySelectorAll('#rows tr').length === 300")
    assert page.is_hidden("#keyform")
    assert page.text_content("#live").startswith("live")
    page.screenshot(path=str(artifacts / "dashboard-300-models.png"))
    loopback_only(browser.requests, srv)


def test_the_api_reference_at_docs_renders_with_nothing_from_outside(start_server, browser):
    """issue 17 item 9: /docs loaded Swagger UI from a CDN and was blank offline; warmstart now serves it."""
    srv = start_server([smollm2()])
    page = browser.new_page()
    page.goto(srv.url + "/docs")
    page.wait_for_selector(".opblock")
    paths = page.eval_on_selector_all(".opblock-summary-path", "ps => ps.map(p => p.dataset.path)")
    assert "/v1/chat/completions" in paths and "/v1/models" in paths
    outside = [url for _, url, _ in browser.requests if not url.startswith(srv.url)]
    assert outside == [], outside


def test_the_playground_does_not_offer_chat_with_a_base_model_and_can_stop_an_answer(start_server, browser):
    """issue 17 item 10: a base model (no chat template) was offered and then failed; there was no stop."""
    base = {"name": "gemma-3-270m", "engine": "llamacpp", "path": GEMMA}
    srv = start_server([smollm2(), base])
    srv.wait_for(lambda: srv.model("gemma-3-270m")["capabilities"], timeout=30)  # inspected once the server is up
    page = browser.new_page()
    page.goto(srv.url + "/playground?model=smollm2-135m-instruct")
    until(page, "document.querySelectorAll('#model option').length === 2")
    option = page.query_selector("#model option[value='gemma-3-270m']")
    assert option.get_attribute("disabled") is not None and "no chat template" in option.text_content()

    until(page, "document.getElementById('state').dataset.state === 'warm'")
    page.fill("#prompt", "Write a long story about a lighthouse keeper.")
    page.press("#prompt", "Enter")
    until(page, "document.querySelector('.msg.assistant .text') && "
                "document.querySelector('.msg.assistant .text').textContent.length > 0")
    page.click("#stop")
    until(page, "document.querySelector('.msg.assistant').dataset.done === 'stopped'")
    assert page.is_hidden("#stop") and page.is_enabled("#send")
    # the server saw the client leave: the replica's slot is free again
    srv.wait_for(lambda: all(r["in_flight"] == 0 for r in srv.model("smollm2-135m-instruct")["replicas"]), timeout=30)

    page.goto(srv.url + "/playground?model=gemma-3-270m")
    until(page, "document.getElementById('prompt').disabled")
    assert "no chat template" in page.get_attribute("#prompt", "placeholder")
    assert page.is_disabled("#send")
