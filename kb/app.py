"""kb's app factory: routes, and every resource owned by a cleanup_ctx."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

import aiohttp
from aiohttp import web

from kb import reload, views
from kb.actions import AddedActions
from kb.clock import ClockLease, run_clock
from kb.keys import BACKGROUND, FORWARD_HTTP, METRICS, NATS, OWNERSHIP, PRESENCE, PUBLISHER, SETTINGS, STORE, WORLDS
from kb.metrics import KbMetrics
from kb.outbox import OutboxPublisher
from kb.ownership import WorldOwnership
from kb.presence import PresenceBook
from kb.stores import open_store
from kb.stores.errors import StoreOutage, store_errors_middleware
from kb.world.content import data_dirs, experience_folders, load_content
from kb.worldservice import WorldService
from shared.config import Settings
from shared.natsconn import nats_cleanup_ctx
from shared.schemas.fastload import check_marshmallow_internals
from shared.service.logs import quiet_store_retries
from shared.service.tasks import bounded, raise_if_cancelled, stop_tasks
from shared.subjects import experience_updates

log = logging.getLogger(__name__)
PRESENCE_SWEEP_S = 1.0


def add_routes(app: web.Application) -> None:
    """Every kb route, in one place."""
    app.router.add_post("/experiences/{experience}/actions", views.post_action)
    app.router.add_get("/experiences/{experience}/players/{user_id}/state", views.get_player_state)
    app.router.add_post("/experiences/{experience}/views", views.post_views)
    app.router.add_post("/experiences/{experience}/reload", reload.post_reload)
    app.router.add_post("/presence", views.post_presence)
    app.router.add_get("/health", views.health)
    app.router.add_get("/metrics", views.metrics)
    app.router.add_get("/openapi.json", views.openapi)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[SETTINGS].kb_store_url)
    await store.open()
    app[STORE] = store
    yield
    await store.close()


async def _worlds_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    publisher = OutboxPublisher(app[STORE], app[NATS], settings)
    presence = PresenceBook(grace_s=settings.presence_grace_s, stale_s=settings.presence_renew_s * 3)
    presence.restore(await app[STORE].load_presence())
    actions = AddedActions.load(settings.action_modules)  # the same modules the gateways import
    worlds = {}
    for experience, data_dir in experience_folders(data_dirs(settings.kb_data_dir)).items():
        world = WorldService(load_content(experience, data_dir, actions.checks), app[STORE], publisher, presence,
                             announce_presence=bool(settings.presence_announce),
                             presence_window_s=settings.presence_window_ms / 1000,
                             players_hot_s=settings.kb_players_hot_s, actions=actions)
        await world.load()
        worlds[experience] = world
    app[PUBLISHER], app[PRESENCE], app[WORLDS] = publisher, presence, worlds
    leased = settings.kb_ownership == "lease"
    my_url = settings.kb_advertise_url or f"http://{settings.kb_host}:{settings.kb_port}"

    async def take_over(experience: str) -> None:
        await worlds[experience].take_over()
        publisher.notify()  # what the former owner committed and did not publish is ours to publish now
    app[OWNERSHIP] = WorldOwnership(app[NATS] if leased else None, list(worlds), my_url,
                                    settings.kb_lease_ttl_s, take_over, settings.kb_lease_grace_s)
    if leased:  # each world's events are published by its owner alone
        owned = app[OWNERSHIP].owned
        publisher.subjects = lambda: [experience_updates(e) for e in owned()]
    app[METRICS] = KbMetrics(app[NATS], publisher, presence, worlds, app[OWNERSHIP])
    log.info("kb serving experiences: %s", ", ".join(f"{e}@v{w.world['version']}" for e, w in worlds.items()))
    yield


async def _sweep_presence(app: web.Application) -> None:
    """Every second: end sessions whose grace ran out (telling the others), persist presence changes.

    Persisting here rather than per request keeps a connect storm from costing an fsync per
    join; a kb killed within that second forgets at most a second of changes, which the gateways'
    periodic renewals (`alive`) put back.
    """
    while True:
        await asyncio.sleep(PRESENCE_SWEEP_S)
        try:
            await _sweep_once(app)
        except Exception:  # noqa: BLE001 - one bad sweep must not end every later one
            raise_if_cancelled()
            log.exception("presence sweep failed; going on")


async def _sweep_once(app: web.Application) -> None:
    now = time.time()
    changes = app[PRESENCE].expire(now)
    if int(now) % 60 == 0:  # about once a minute: absent players not seen lately leave memory
        for world in app[WORLDS].values():
            await world.evict_cold(now)
    await app[STORE].save_presence(*app[PRESENCE].take_changes())
    for experience in app[OWNERSHIP].owned():
        world = app[WORLDS][experience]
        mine = [c for c in changes if c.experience == experience]
        if mine:
            await world.announce(mine)


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    ownership = app[OWNERSHIP]
    tasks = [asyncio.create_task(app[PUBLISHER].run(), name="outbox-publisher"),
             asyncio.create_task(_sweep_presence(app), name="presence-sweep"),
             asyncio.create_task(ownership.run(), name="world-leases")]
    if settings.kb_clock_tick_s > 0:
        lease = None if ownership.leased else ClockLease(app[NATS], ttl_s=max(3 * settings.kb_clock_tick_s, 2.0))
        tasks.append(asyncio.create_task(run_clock(app[WORLDS], lease, settings.kb_clock_tick_s, ownership.owns),
                                         name="clock"))
    tasks += [asyncio.create_task(world.announcer.run(), name=f"presence-{experience}")
              for experience, world in app[WORLDS].items()]
    app[BACKGROUND] = tasks
    yield
    await stop_tasks(tasks)
    for world in app[WORLDS].values():
        await bounded(world.announcer.flush(), 2.0, f"presence flush {world.experience}")
    await app[STORE].save_presence(*app[PRESENCE].take_changes())
    await ownership.release()


async def _forward_http_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pooled client that forwards requests to the kb owning a world (lease mode)."""
    timeout = aiohttp.ClientTimeout(total=app[SETTINGS].kb_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        app[FORWARD_HTTP] = http
        yield


def create_app(settings: Settings) -> web.Application:
    """Build the kb application; nothing connects until the app starts."""
    if settings.kb_ownership not in ("single", "lease"):
        raise ValueError(f"GAIA_KB_OWNERSHIP must be 'single' or 'lease', not {settings.kb_ownership!r}")
    quiet_store_retries()
    check_marshmallow_internals()
    app = web.Application(middlewares=[views.service_key_middleware, store_errors_middleware(StoreOutage())],
                          client_max_size=views.MAX_PRESENCE_BODY)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(nats_cleanup_ctx(SETTINGS, NATS, "kb"))
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_forward_http_ctx)
    app.cleanup_ctx.append(_worlds_ctx)
    app.cleanup_ctx.append(_background_ctx)
    add_routes(app)
    return app
