"""Development: an experience's content read again while it runs (POST /experiences/{experience}/reload).

`make run` calls it when a content file changes (harness/system/contentwatch.py). The content is
checked whole; valid, the world is migrated to it (kb/world/migrate.py) and committed as a version step
every client answers with a fresh snapshot; invalid, nothing changes and the answer lists every problem.
Production never reloads: a content change there is a new version, adopted when kb starts on it.
"""
from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from kb.keys import SETTINGS
from kb.leaseforward import local_world_or_forward
from kb.world.content import ContentError, load_content
from shared.service.problems import json_response, problem

log = logging.getLogger(__name__)
INVALID_CONTENT = "invalid_content"


async def post_reload(request: web.Request) -> web.Response:
    """Read the experience's folder again; 200 with the versions and what changed, 422 with every problem."""
    if request.app[SETTINGS].env != "dev":
        return problem(403, "forbidden", "content reloads are for development (GAIA_ENV=dev); in production a "
                                         "content change is a new version: deploy it and restart kb")
    world = await local_world_or_forward(request)
    if isinstance(world, web.Response):
        return world
    folder = Path(world.content.folder)
    try:
        content = load_content(world.experience, folder.parent, world.actions.checks)
    except ContentError as exc:
        log.info("%s not reloaded: %d problem(s)", world.experience, len(exc.problems))
        return problem(422, INVALID_CONTENT, f"{world.experience} was not reloaded",
                       {"folder": str(folder), "problems": [str(p) for p in exc.problems] or [str(exc)]})
    answer = await world.reload(content)
    log.info("%s reloaded: v%d -> v%d; %s", world.experience, answer["from_version"], answer["version"],
             "; ".join(answer["notes"]) or "nothing else changed")
    return json_response(answer)
