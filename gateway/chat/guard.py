"""The guard after the model: a story goes to players only sentence by sentence, each one checked.

Two findings end the model's story in kb's message (gateway/chat/narration.py):

- `model_leak`: the sentence shows what players must not see: an internal id (`dream_bottle_1`, a
  user id, anything snake_cased), a line label or instruction of the prompt (gateway/chat/prompt.py),
  chat-template or JSON markup, or the model speaking as itself ("I", "my" outside quotes).
- `model_contradiction`: the story says something kb did not decide, or does not tell what it did. A
  success told with a negation ("not", "can't"), an absence ("nothing", "gone") or a failure phrase
  when kb's message has none of that kind; a refusal whose sentence claims the action ("you take",
  "successfully", ...) without a negation; a first sentence (what players read first) that does not
  tell kb's result: a refusal without a negation, a success kb tells with its action's verb ("You
  take ...") told without one, or no name of what kb's message is about (its item, place or character,
  when it names one); a sentence that claims the action or says what the player
  carries naming an item or place kb's message does not name; what the player carries told against
  kb's view after the action (empty hands when they hold something, something when they hold nothing);
  a sentence that claims a change of another kind than kb's action ("you drop it" after a take).

Words inside double quotes are speech (an NPC's line) and are not read for claims or voice; a phrase
kb's own message uses is never held against the story. The rules are words, not a model: they can
refuse a good sentence (then kb's message is told), never let through one that breaks a rule.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.chat import prompt
from gateway.chat.prompt import Scene

LEAK, CONTRADICTION = "model_leak", "model_contradiction"
MAX_STORY_CHARS = 1200  # a story longer than this is cut at its last full sentence (model_length)

_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”")
_ID_IN_BRACKETS = re.compile(r"\([a-z0-9_]+\)")  # "(louisa)": an id as an earlier prompt showed it
_SNAKE = re.compile(r"\b[A-Za-z]+(?:_[A-Za-z0-9]+)+\b")
_MARKUP = ("<|", "|>", "</", "```", "{", "}", "[", "]", "###", "im_start", "im_end")
_META = ("text adventure", "narrat", "instruction", "the facts", "second person", "present tense", "as an ai",
         "language model", "the act tool", "tool call", "function call", "user:", "assistant:", "system:",
         "the player says", "the player said", "result:", "kb", "the world says", "other players here",
         "characters here")
# A prompt's line label where a sentence starts ("Worked: ..."); its instructions' words anywhere.
_SCAFFOLD = re.compile("|".join([rf"^\W*{re.escape(label.lower())}" for label in prompt.LABELS]
                                + [rf"\b{re.escape(phrase)}" for phrase in _META]))
_FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'll|I'd|me|my|mine|myself)\b")
ABSENCE = re.compile(r"\b(nothing|empty|none|nobody|no one|no|nowhere|gone|missing|vanish\w*|disappear\w*)\b")
FAILURE = re.compile(
    r"\b(can't|cannot|can not|couldn't|could not|unable|fail|fails|failed|nothing happens|no such|not here|"
    r"isn't here|is not here|not there|nowhere|anywhere|refuse|refuses|refused|won't|will not|doesn't work|"
    r"does not work|didn't work|did not work|in vain|no luck|don't have|do not have|not carrying|impossible)\b")
NEGATION = re.compile(r"\b(not|no|never|nobody|nothing|none|empty|try|tries|tried|attempt|attempts)\b|n't\b|"
                      + FAILURE.pattern)
_CLAIM_WORDS = {
    "collect_item": "take|takes|took|taken|taking|pick|picks|picked|picking|grab|grabs|grabbed|grabbing|collect|"
                    "collects|collected|collecting|get|gets|got|getting|lift|lifts|lifted|lifting|pocket|pockets|"
                    "pocketed",
    "drop_item": "drop|drops|dropped|dropping|put|puts|putting|place|places|placed|placing|set|sets|leave|leaves|"
                 "left|leaving|lay|lays|laid",
    "go": "go|goes|went|going|walk|walks|walked|walking|arrive|arrives|arrived|enter|enters|entered|entering|step|"
          "steps|stepped|stepping|head|heads|headed|reach|reaches|reached|make your way|find yourself|are now in",
    "give_item": "give|gives|gave|given|giving|hand|hands|handed|handing|offer|offers|offered",
    "use_item": "use|uses|used|using|turn|turns|turned|turning|open|opens|opened|opening|uncork|uncorks|uncorked|"
                "plant|plants|planted|planting",
    "examine": "see|sees|saw|examine|examines|examined|notice|notices|noticed|spot|spots|spotted|look at",
}
# A change of another kind than kb's action, by its plainest verbs only ("you reach for", "you turn to Louisa",
# "you shake your head" claim nothing).
_OTHER_CHANGES = {
    "collect_item": "take|took|taken|taking|pick up|picked up|picking up|grab|grabbed|pocket|pocketed",
    "drop_item": "drop|dropped|dropping|put down|set down",
    "go": "go to|went to|walk to|walk into|walked to|walked into|step into|stepped into|enter|entered|arrive|arrived",
    "give_item": "give|gave|giving|hand over|handed",
    "use_item": "use|used|uncork|uncorked|plant|planted",
}
_SUCCESS = re.compile(r"\bsuccessfully\b|\byou (?:now )?(?:have|hold|carry|own) (?:the|a|an|your)\b|\byou've\b|"
                      r"\byou (?:manage|managed|succeed|succeeded)\b|\bit works\b")
_CLAIMS = {action: re.compile(rf"\byou(?:'ve|'re)?(?:\s+\w+){{0,2}}?\s+(?:{words})\b")
           for action, words in _CLAIM_WORDS.items()}
_OTHERS = {action: re.compile(rf"\byou(?:'re)?(?:\s+\w+){{0,2}}?\s+(?:{words})\b")
           for action, words in _OTHER_CHANGES.items()}
_CLAUSES = re.compile(r"[,;:]|\bbut\b|\band\b|\bthen\b")
_TALK_CLAIM = re.compile(r"\b(says|said|replies|replied|answers|answered|tells you|nods|smiles)\b")
_POSSESSION = re.compile(r"\b(carry|carrying|carries|have|has|holding|hold|holds|wear|wearing|inventory|pocket|"
                         r"pockets|bag)\b")


@dataclass(frozen=True)
class Facts:
    """What a story must agree with: kb's result, and the names and ids of the player's scene."""

    action: str | None
    success: bool
    message: str  # kb's own words
    ids: frozenset[str]  # user ids: never shown
    names: frozenset[str]  # item, place and character names of the scene, lower case
    carried: frozenset[str] | None = None  # what the player carries after the action (None: kb did not say)

    @property
    def said(self) -> str:
        return self.message.lower()

    @property
    def subjects(self) -> list[str]:
        """The scene's names kb's message uses: what the story is about."""
        return [n for n in self.names if _named(n, self.said)]


def facts_of(scene: Scene) -> Facts:
    """The facts of a chat whose action kb has answered."""
    result, action = scene.result or {}, scene.action or {}
    names: set[str] = set()
    view = scene.view or {}
    for area in (view.get("areas") or {}).values():
        names.add(str(area.get("name", "")).lower())
        for spot in (area.get("spots") or {}).values():
            names.update(str(i.get("semantic_name", "")).lower() for i in spot.get("items") or [])
    names.update(str(i.get("semantic_name", "")).lower() for i in (view.get("player") or {}).get("inventory") or [])
    names.update(str(npc.get("name", "")).lower() for npc in (view.get("npcs") or {}).values())
    # Area and NPC ids are often plain words ("garden", "louisa"): ids with an underscore are caught by their
    # shape, user ids by name (kb's view holds them; the prompt never does).
    users = {scene.user_id, *(str(p.get("user_id", "")) for p in view.get("players") or [])}
    player = view.get("player")
    carried = (frozenset(str(i.get("semantic_name", "")).lower() for i in player.get("inventory") or [])
               if isinstance(player, dict) else None)
    return Facts(action.get("action"), bool(result.get("success")), str(result.get("message", "")),
                 frozenset(u for u in users if len(u) >= 3), frozenset(n for n in names if n), carried)


def unquoted(sentence: str) -> str:
    """The sentence without the speech inside double quotes."""
    return _QUOTED.sub(" ", sentence)


def check(sentence: str, facts: Facts, first: bool = False) -> str | None:
    """LEAK, CONTRADICTION or None for one sentence of the story (`first`: the story's first sentence)."""
    return _leak(sentence, facts) or _contradiction(sentence, facts) or (_tells(sentence, facts) if first else None)


def _tells(first: str, facts: Facts) -> str | None:
    """The first sentence tells kb's result, since players read it before any other: it names what kb's
    message is about (one of its names of the scene, if it has any), and a refusal is told as one."""
    if facts.action is None:
        return None
    text = first.lower()
    subjects = facts.subjects
    if subjects and not any(_named(n, text) for n in subjects):
        return CONTRADICTION
    if not facts.success and not NEGATION.search(unquoted(text)):
        return CONTRADICTION
    claim = _CLAIMS.get(facts.action)  # kb says "You take the umbrella.": so does the story, in its own verb
    if facts.success and claim is not None and claim.search(facts.said) and not claim.search(unquoted(text)):
        return CONTRADICTION
    return None


def _leak(sentence: str, facts: Facts) -> str | None:
    lower, said = sentence.lower(), facts.said
    if _SNAKE.search(sentence) or any(m in sentence for m in _MARKUP if m not in facts.message):
        return LEAK
    for found in _SCAFFOLD.finditer(lower):
        if found.group(0) not in said:
            return LEAK
    words = set(re.findall(r"[A-Za-z0-9_-]+", sentence))
    if _ID_IN_BRACKETS.search(sentence) or any(i in words and i.lower() not in said for i in facts.ids):
        return LEAK
    if _FIRST_PERSON.search(unquoted(sentence)):
        return LEAK
    return None


def _contradiction(sentence: str, facts: Facts) -> str | None:
    text = unquoted(sentence).lower()
    said = facts.said
    if facts.action is None:
        return None
    plain_said = unquoted(said)
    if facts.success:
        # A success is told with no negation, absence or failure of the story's own: of each kind, only where
        # kb's own message has one ("a note that never quite finishes"; "you are carrying nothing").
        for kind in (ABSENCE, NEGATION, FAILURE):
            found = kind.search(text)
            if found and not kind.search(plain_said) and found.group(0) not in said:
                return CONTRADICTION
    elif any(_claims(clause, facts.action) and not NEGATION.search(clause) for clause in _CLAUSES.split(text)):
        return CONTRADICTION  # "You take the magic, and it is not here": the claim's own clause says it worked
    for other, claim in _OTHERS.items():  # a change kb did not make: "You take the dream bottle; you drop it."
        if other != facts.action and not claim.search(said) and any(
                claim.search(clause) and not NEGATION.search(clause) for clause in _CLAUSES.split(text)):
            return CONTRADICTION
    if _claims(text, facts.action) or _POSSESSION.search(text):
        strangers = [n for n in facts.names if _named(n, text) and n not in said]
        if strangers:
            return CONTRADICTION
    if _POSSESSION.search(text) and facts.carried is not None:  # what the player carries, by kb's view after it
        empty = bool(re.search(r"\b(nothing|empty|no items|none)\b", text))
        if (empty and facts.carried) or (not facts.carried and not NEGATION.search(text)):
            return CONTRADICTION
    return None


def _claims(text: str, action: str) -> bool:
    """The sentence says the action happened (its verbs in the second person, or a plain success word)."""
    pattern = _CLAIMS.get(action)
    if _SUCCESS.search(text) or (pattern is not None and pattern.search(text)):
        return True
    return action == "talk" and bool(_TALK_CLAIM.search(text))


def _named(name: str, text: str) -> bool:
    return bool(name) and re.search(rf"\b{re.escape(name)}\b", text) is not None


_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)]*\s+")


class Sentences:
    """Text streamed in pieces, handed on one complete sentence at a time."""

    def __init__(self) -> None:
        self.buffer = ""

    def feed(self, piece: str) -> list[str]:
        """The sentences `piece` completed: each ends with its punctuation and the space after it."""
        self.buffer += piece
        out: list[str] = []
        start = 0
        while (end := _SENTENCE_END.search(self.buffer, start)) is not None:
            sentence = self.buffer[:end.end()]
            if sentence.count('"') % 2:  # inside quoted speech: its sentences are the speaker's, read on
                start = end.end()
                continue
            self.buffer, start = self.buffer[end.end():], 0
            if sentence.strip():
                out.append(" ".join(sentence.split()) + " ")
        return out

    def rest(self) -> str:
        """What is left once the stream ended (a last sentence without a space after it, or a fragment)."""
        rest, self.buffer = self.buffer, ""
        return " ".join(rest.split())


def complete(text: str) -> bool:
    """True when `text` is a whole sentence: it ends with its punctuation (maybe inside closing quotes)."""
    return bool(re.search(r"[.!?…][\"'”’)]*$", text.strip()))
