"""The harness commands studios run: a scenario passes on a healthy system and reports what it saw."""
from __future__ import annotations

import pytest

from harness.__main__ import main


def test_scenario_command_plays_converges_and_exits_zero(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["scenario", "--players", "3", "--duration", "5", "--tick", "0.5"])
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    assert "lost 0 (checked one by one: " in out and out.rstrip().endswith("OK")
    assert "duplicated 0, out of order 0, diverged worlds 0" in out
    assert "gap repairs with get_state 0" in out
    due = int(out.split("owed to players since they connected ")[1].split(",")[0])
    assert due > 0 and f"of those checked one by one {due} (100.0%), delivered {due};" in out
    others = int(out.split("changes by other players seen ")[1].split(";")[0])
    world = int(out.split("autonomous world changes seen ")[1].split()[0])
    assert others > 0 and world > 0
