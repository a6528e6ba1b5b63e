"""The live page at /, driven end to end in headless Chromium (Debian's package) with Playwright."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import EXPERIENCE, missing_tool

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True)
def needs_chromium() -> None:
    """Skipped without Chromium; under CI=true a failure."""
    if CHROMIUM is None:
        missing_tool("chromium is not installed and `make test` could not install it (apt-get install chromium)")


# Flags for a sandboxed, offline machine: no background calls home, no GPU.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


def screenshot_dir() -> Path | None:
    """`make screenshots` sets GAIA_SCREENSHOTS=docs/screenshots; plain test runs take none."""
    folder = os.environ.get("GAIA_SCREENSHOTS")
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


async def test_a_player_logs_in_collects_and_drops_and_watches_another_player(browser, gateway_server, players,
                                                                               token) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(str(gateway_server.make_url("/")))
    await page.fill("#token", token("webplayer"))
    await page.fill("#experience", EXPERIENCE)
    await page.click("#connect")
    await page.wait_for_selector("#status[data-state=connected]")
    await page.wait_for_selector("#area-name:text-is('Entrance')")

    await page.click("#exits button:has-text('Main Room')")
    await page.wait_for_selector("#area-name:text-is('Main Room')")
    bob = await players("bob")
    assert (await bob.act("go", destination="main_room"))["success"]
    assert (await bob.next("world_update"))["actor_id"] == "bob"
    await page.wait_for_selector("#players li:has-text('bob')")

    await page.click("#items li[data-instance=dream_bottle_1] button")
    await page.wait_for_selector("#inventory li[data-instance=dream_bottle_1]")
    seen_by_bob = await bob.next("world_update")
    assert seen_by_bob["actor_id"] == "webplayer"
    assert seen_by_bob["changes"][0]["operation"] == "remove"
    assert await page.locator("#items li[data-instance=dream_bottle_1]").count() == 0

    # Another player's change arrives on the page by itself.
    assert (await bob.act("collect_item", instance_id="dream_bottle_2"))["success"]
    assert (await bob.next("world_update"))["actor_id"] == "bob"
    await page.wait_for_selector("#log li.world_update:has-text('bob')")
    assert await page.locator("#items li[data-instance=dream_bottle_2]").count() == 0
    shots = screenshot_dir()
    if shots:
        await page.screenshot(path=str(shots / "live-page.png"), full_page=True)

    # The chat box: the player's own words, narrated after the change they cause.
    await page.fill("#say", "drop dream bottle")
    await page.click("#say-send")
    await page.wait_for_selector("#narrative:has-text('dream bottle')")
    await page.wait_for_selector("#items li[data-instance=dream_bottle_1]")
    assert (await bob.next("world_update"))["actor_id"] == "webplayer"
    await page.fill("#say", "take dream bottle")
    await page.click("#say-send")
    await page.wait_for_selector("#inventory li[data-instance=dream_bottle_1]")
    assert (await bob.next("world_update"))["actor_id"] == "webplayer"

    await page.click("#inventory li[data-instance=dream_bottle_1] button")
    await page.wait_for_selector("#items li[data-instance=dream_bottle_1]")
    bob_sees_drop = await bob.next("world_update")
    assert bob_sees_drop["actor_id"] == "webplayer" and bob_sees_drop["changes"][0]["operation"] == "add"
    assert not errors, errors


async def test_a_bad_token_is_shown_not_retried(browser, gateway_server) -> None:
    page = await browser.new_page()
    await page.goto(str(gateway_server.make_url("/")))
    await page.fill("#token", "not-a-token")
    await page.click("#connect")
    await page.wait_for_selector("#log li.error:has-text('4401')")
    await page.wait_for_selector("#status[data-state=offline]")


async def test_a_link_with_a_token_connects_by_itself_and_shows_who_is_where_on_a_phone(browser, gateway_server,
                                                                                       players, token) -> None:
    alice = await players("alice")
    phone = await browser.new_context(viewport={"width": 400, "height": 800})
    page = await phone.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(str(gateway_server.make_url(f"/?token={token('webplayer')}&experience={EXPERIENCE}")))
    await page.wait_for_selector("#status[data-state=connected]")
    assert "token" not in page.url, "the token leaves the address bar"
    await page.wait_for_selector("#players-here li:has-text('alice')")  # the late joiner sees who is there
    await page.wait_for_selector("#map li[data-area=entrance]:has-text('alice')")

    assert (await alice.act("go", destination="main_room"))["success"]
    await page.wait_for_selector("#map li[data-area=main_room]:has-text('alice')")
    assert await page.locator("#players-here li:has-text('alice')").count() == 0
    await page.wait_for_selector("#players li[data-user=alice]:has-text('Main Room')")

    await page.click("#exits button:has-text('Main Room')")
    await page.click("#exits button:has-text('Counter')")
    await page.wait_for_selector("#area-name:text-is('Counter')")
    await page.click("#npcs li:has-text('Louisa') button")
    await page.wait_for_selector("#dialogue:has-text('Louisa')")  # NPC dialogue in the room panel
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways on a 400 px phone ({width} px wide)"
    shots = screenshot_dir()
    if shots:
        await page.screenshot(path=str(shots / "live-page-phone.png"), full_page=True)

    icon = await page.request.get(str(gateway_server.make_url("/favicon.ico")))
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    # The same browser, later, without a token in the link: nobody is logged in.
    await page.goto(str(gateway_server.make_url("/")))
    await page.wait_for_timeout(300)
    assert await page.input_value("#token") == ""
    assert await page.get_attribute("#status", "data-state") == "offline"
    assert not errors, errors
    await phone.close()
