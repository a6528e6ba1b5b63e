"""The narrator evaluation's fixed lines and how each told story is scored, by rules written here (not the
gateway's guard: the evaluation judges what the guard let through).

One player plays LINES in order from the entrance of a fresh world (no clock: Louisa stays at the
counter), so every line's outcome is known in advance: `expect` is kb's success (None for free-form
lines, which a model may turn into any action). Only what the model told is scored: a story that is
kb's message (narrator `fallback` or `builtin`) is kb's own words; after a mid-story fallback (" ... ")
the model's part before it is scored.

- contradiction: a success told with a failure phrase the line does not allow; a refusal told without
  a negation, or with the line's success claim in a clause that has none; what the player carries told
  against what they carry (an item they do not hold, or empty hands when they hold something); a move
  told as arriving somewhere else.
- leak: an internal id (snake_case), a player's user id, a line label or instruction of a prompt,
  chat-template or JSON markup.
- cut: the model's story does not end with a sentence's punctuation and chat_done does not say
  `model_length`.
- off topic (reported, not a failure): a story that never names what its line was about.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ITEMS = ("dream bottle", "moon key", "feather quill", "star seed", "umbrella")
AREAS = ("Entrance", "Main Room", "Counter", "Back Room", "Moonlit Garden")
FAILURE = re.compile(r"\b(can't|cannot|can not|couldn't|could not|unable|fail\w*|not here|isn't here|no such|"
                     r"nothing happens|nowhere|anywhere|don't have|do not have|not carrying|refuse\w*|won't|"
                     r"isn't there|not there|there is none|there's none|is gone|it's gone|empty|nothing)\b")
NEGATION = re.compile(r"\b(not|no|never|nobody|nothing|none|cannot|unable|fail\w*|try|tries|tried|only|already)\b|"
                      r"n't\b")
SCAFFOLD = re.compile(r"(^|[.!?]\s+)\W*(place|said|worked|failed|earlier|in reach|you carry|result|action|facts?|"
                      r"scene|user|assistant|system|narrator)\s*:|choose the one action|the world says|"
                      r"other players here|\bplayer [a-z]\b|text adventure|instruction|narrat|<\||\|>|[{}\[\]]",
                      re.IGNORECASE)
# kb's own look message has "Here: Louisa." and "Exits: ...": a label only where kb would not write it
LOOK_LABELS = re.compile(r"(^|[.!?]\s+)\W*(here|exits)\s*:", re.IGNORECASE)
SNAKE = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")
MOVES = re.compile(r"\byou (?:\w+ )?(?:go|walk|step|arrive|enter|head|reach|find yourself)\w* (?:in|into|to|at)? ?"
                   r"(?:the )?(" + "|".join(a.lower() for a in AREAS) + r")\b")
QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”")
CLAUSES = re.compile(r"[,;:]|\bbut\b|\band\b|\bthen\b")
ANY_CLAIM = r"\byou\b(?:\s+\w+){0,2}?\s+"


@dataclass(frozen=True)
class Line:
    """One line of the script: what kb will answer and what its story must keep."""

    text: str
    kind: str  # take, drop, move, look, inventory, talk, give, use, free
    expect: bool | None  # kb's success; None: free-form (any action the model proposes, or talk)
    about: tuple[str, ...] = ()  # the story names one of these (else: off topic)
    claim: str = ""  # for a refusal: the success it must not tell (a regex after "you ...")
    allow: tuple[str, ...] = ()  # failure words a success of this line may use (kb's own)
    carrying: tuple[str, ...] | None = None  # inventory lines: what the player holds now
    to: str = ""  # moves that work: where the player arrives


MAIN_ROOM = ("cannot",)  # its description: "bottles that glow faintly in colours you cannot name"


def _take(item: str, ok: bool) -> Line:
    return Line(f"take the {item}", "take", ok, (item,), "" if ok else r"(take|took|pick\w*|grab\w*|now have|hold)")


LINES: tuple[Line, ...] = (
    Line("look around", "look", True, ("entrance",)),
    Line("inventory", "inventory", True, (), allow=("nothing", "empty"), carrying=()),
    _take("umbrella", True),
    _take("umbrella", False),
    Line("what am i carrying", "inventory", True, ("umbrella",), carrying=("umbrella",)),
    Line("go to the counter", "move", False, ("counter",), r"(go|went|walk\w*|arriv\w*|enter\w*|step\w*|reach\w*)"),
    Line("go to the main room", "move", True, ("main room",), allow=MAIN_ROOM, to="main room"),
    Line("go to the main room", "move", False, ("main room",), r"(go|went|walk\w*|arriv\w*|enter\w*|step\w*)"),
    _take("dream bottle", True),
    _take("moon key", False),
    Line("examine the feather quill", "look", True, ("quill",)),
    _take("feather quill", True),
    Line("drop the feather quill", "drop", True, ("quill",)),
    Line("drop the moon key", "drop", False, ("moon key",), r"(drop\w*|put|place\w*|set|leave|left)"),
    Line("go to the counter", "move", True, ("counter",), to="counter"),
    Line("talk to louisa", "talk", True, ("louisa",)),
    Line("ask louisa about the garden", "talk", True, ("louisa", "garden", "bench")),
    _take("moon key", True),
    Line("give the dream bottle to louisa", "give", True, ("louisa", "bottle")),
    Line("give the umbrella to louisa", "give", False, ("louisa", "umbrella"), r"(give|gave|hand\w*)"),
    Line("use the moon key", "use", True, ("moon key", "key")),
    Line("inventory", "inventory", True, ("umbrella", "moon key"), carrying=("umbrella", "moon key")),
    Line("go to the garden", "move", False, ("garden",), r"(go|went|walk\w*|arriv\w*|enter\w*|step\w*|reach\w*)"),
    Line("go to the main room", "move", True, ("main room",), allow=MAIN_ROOM, to="main room"),
    Line("go to the back room", "move", True, ("back room",), to="back room"),
    _take("dream bottle", True),
    Line("go to the garden", "move", True, ("garden",), to="moonlit garden"),
    _take("star seed", True),
    Line("use the star seed", "use", True, ("seed",), allow=("gone", "is gone", "it's gone")),  # kb: "and is gone"
    Line("use the star seed", "use", False, ("seed",), r"(use\w*|plant\w*)"),
    Line("talk to louisa", "talk", False, ("louisa",), r"(talk\w*|speak\w*)"),
    Line("examine the fountain", "look", False, ("fountain",), r"(see|saw|examine\w*|notice\w*)"),
    Line("drop the umbrella on the bench", "drop", True, ("umbrella",)),
    Line("look", "look", True, ("garden",)),
    Line("say hello", "talk", True, (), allow=("nobody", "no one")),
    Line("inventory", "inventory", True, ("moon key", "dream bottle"), carrying=("moon key", "dream bottle")),
    Line("let the moon have what I carry", "free", None),
    Line("hum a quiet tune", "free", None),
    Line("I wonder what this garden hides", "free", None),
    Line("thank the stars for tonight", "free", None),
    Line("maybe rest for a while", "free", None),
    Line("whistle for a friend", "free", None),
)
# The load: players at once, each saying one of these from the entrance of the same world (one of them gets
# the umbrella: which one, kb decides).
LOAD_LINES: tuple[Line, ...] = (
    Line("look around", "look", True, ("entrance",)),
    Line("inventory", "inventory", True, (), allow=("nothing", "empty"), carrying=()),
    Line("go to the main room", "move", True, ("main room",), allow=MAIN_ROOM, to="main room"),
    Line("go to the garden", "move", True, ("garden",), to="moonlit garden"),
    Line("take the umbrella", "take", None, ("umbrella",), r"(take|took|pick\w*|grab\w*|now have|hold)"),
    Line("say hello", "talk", True, (), allow=("nobody", "no one")),
    Line("go to the counter", "move", False, ("counter",), r"(go|went|walk\w*|arriv\w*|enter\w*|step\w*|reach\w*)"),
    Line("look", "look", True, ("entrance",)),
    Line("what am i carrying", "inventory", True, (), allow=("nothing", "empty"), carrying=()),
    Line("examine the doormat", "look", False, ("doormat",), r"(see|saw|examine\w*|notice\w*)"),
)


@dataclass
class Told:
    """One chat as the player saw it, and its score."""

    line: Line
    story: str
    done: dict[str, Any]
    first_ms: float
    total_ms: float
    findings: list[str] = field(default_factory=list)  # contradiction, leak, cut, off_topic, unexpected

    @property
    def model_part(self) -> str:
        """What the model told: all of a model's story, the part before kb's message after a fallback."""
        if self.done.get("narrator") == "model":
            return self.story
        head, sep, _ = self.story.partition("...")
        return head if sep and self.done.get("narrator") == "fallback" and head.strip() else ""


def score(told: Told, user_ids: tuple[str, ...]) -> Told:
    """Fill `told.findings` by the rules above."""
    line, done, text = told.line, told.done, told.model_part.strip()
    if line.expect is not None and done.get("success") is not line.expect:
        told.findings.append("unexpected")  # the script and kb disagree: not scored for contradictions
    if not text:
        return told
    plain = QUOTED.sub(" ", text).lower()
    if _leaks(text, user_ids) or (line.kind != "look" and LOOK_LABELS.search(text)):
        told.findings.append("leak")
    if done.get("narrator") == "model" and not re.search(r"[.!?…][\"'”’)]*$", text) and \
            done.get("reason") != "model_length":
        told.findings.append("cut")
    if "unexpected" not in told.findings and _contradicts(line, bool(done.get("success")), plain):
        told.findings.append("contradiction")
    if line.about and not any(a in text.lower() for a in line.about):
        told.findings.append("off_topic")
    return told


def _leaks(text: str, user_ids: tuple[str, ...]) -> bool:
    return bool(SNAKE.search(text) or SCAFFOLD.search(text) or
                any(re.search(rf"\b{re.escape(u)}\b", text, re.IGNORECASE) for u in user_ids))


def _contradicts(line: Line, success: bool, plain: str) -> bool:
    if success:
        failure = [m.group(0) for m in FAILURE.finditer(plain) if m.group(0) not in line.allow]
        if failure and line.kind != "free":
            return True
        if line.kind == "free" and re.search(r"\b(can't|cannot|nothing happens|unable|fail\w*)\b", plain):
            return True
    else:
        if not NEGATION.search(plain):
            return True
        claim = re.compile(ANY_CLAIM + line.claim) if line.claim else None
        if claim and any(claim.search(c) and not NEGATION.search(c) for c in CLAUSES.split(plain)):
            return True
    if line.carrying is not None:
        named = [i for i in ITEMS if i in plain]
        if any(i not in line.carrying for i in named):
            return True
        if line.carrying and re.search(r"\b(nothing|empty|no items)\b", plain):
            return True
    if line.to:
        arrived = [m.group(1) for m in MOVES.finditer(plain)]
        if arrived and any(place not in line.to for place in arrived):
            return True
    return False
