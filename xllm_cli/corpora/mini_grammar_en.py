"""English wording of the mini grammar (``xllm prep mini --lang en``).

Same templates, slots and held-out combinations as the Mandarin corpus (see
:mod:`mini_lang`): each template gets an English pattern and each canonical
slot value an English word. Transcripts are lower-case words without
punctuation and with numbers spelt out ("there are three red cups on the
table"; days too: "march twenty three", see SLOT_WORDS), so WER/CER need no
normalisation and espeak-ng reads every number the same way. A few words
follow from the slots rather than being slots themselves: the plural after a
count above one, "is"/"are", and "turn on" (lamps, lights, the air
conditioner) or "open". English grammar lets these hint at a drowned key word (plural: a count above one; "turn on the red ...":
the lamp), which Mandarin does not; "this is the" rather than "a"/"an" avoids
one more such hint (only "orange" takes "an").

Voices are espeak-ng American (``en-us``) and British (``en``) English, six
speakers each, with the Mandarin corpus's variants, speeds and pitches.
"""

from __future__ import annotations

from functools import lru_cache

from . import mini_grammar as G
from .mini_lang import Spoken

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = {2: "twenty", 3: "thirty"}
MONTHS = "january february march april may june july august september october november december".split()


def cardinal(n: int) -> str:
    """0 < n < 40 in words, without a hyphen: "twenty three"."""
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")


# canonical (Mandarin) slot value -> English word(s), per slot
SLOT_WORDS: dict[str, dict[str, str]] = {
    "C": dict(zip([w for w, _ in G.COLOURS], "red yellow blue green white black purple orange".split())),
    "O": dict(zip(G.OBJECTS, "lamp door cup ball flower car book umbrella fish star".split())),
    "N": {G.COUNT_WORDS[n]: cardinal(n) for n in G.COUNT_WORDS},
    "T": {G.number_word(t): cardinal(t) for t in range(16, 31)},
    "H": {G.hour_word(h): cardinal(h) for h in range(1, 13)},
    "M": {G.number_word(m): MONTHS[m - 1] for m in range(1, 13)},
    # Days are cardinals ("march twenty three", as dates are written): ordinals would leave "ten",
    # "eleven" and "twelve" to the alarm hours alone, so a held-out hour would be a word never
    # heard in training, where Mandarin holds out only combinations of known characters.
    "D": {G.number_word(d): cardinal(d) for d in range(1, 32)},
    "R": dict(zip(G.ROOMS, ["living room", "bedroom", "kitchen", "study"])),
    "A": dict(zip(G.APPLIANCES, ["light", "air conditioner", "window", "door"])),
}
PLURAL = {"fish": "fish"}  # the others take an s
SWITCHED = {"lamp", "light", "air conditioner"}  # turned on and off; doors, books... are opened

# Upper-case fields are the grammar's slots, lower-case ones follow from them (see the docstring).
PATTERNS: dict[str, str] = {
    "take": "bring the {C} {O} over here",
    "give": "please give me the {C} {O}",
    "this": "this is the {C} {O}",
    "table": "there {be} {N} {C} {O} on the table",
    "want": "i want {N} {O}",
    "open": "{open} the {C} {O}",
    "close": "{close} the {C} {O}",
    "aircon": "set the air conditioner to {T} degrees",
    "alarm": "wake me up at {H} tomorrow",
    "date": "today is {M} {D}",
    "room_on": "{open} the {R} {A}",
    "room_off": "{close} the {R} {A}",
}
# speaker (the Mandarin corpus's espeak variant, speed and pitch) -> English voice, half American,
# half British. British is the voice file "en" (espeak's English_(Great_Britain)): "en-gb" is only
# a language alias, which the binary resolves but libespeak-ng's espeak_SetVoiceByName does not.
_US, _GB = "en-us", "en"
VOICES = {"f1": _US, "f2": _GB, "f3": _US, "f4": _GB, "f5": _US, "m1": _GB,
          "m2": _US, "m3": _GB, "m4": _US, "m5": _GB, "m6": _US, "m7": _GB}


def words_for(sentence: G.Sentence) -> dict[str, str]:
    """Every field of the sentence's English pattern: the slots in English, plus the words they decide."""
    words = {slot: SLOT_WORDS[slot][value] for slot, value in sentence.values}
    if "N" in words and words["N"] != "one":
        words["O"] = PLURAL.get(words["O"], words["O"] + "s")
    thing = words.get("O") or words.get("A", "")
    words["be"] = "is" if words.get("N", "one") == "one" else "are"
    words["open"], words["close"] = ("turn on", "turn off") if thing in SWITCHED else ("open", "close")
    return words


class English:
    code = "en"
    unit = "words"

    def voice(self, spk: str) -> str:
        return VOICES[spk]

    def render(self, sentence: G.Sentence, key: str) -> Spoken:
        pattern, words = PATTERNS[sentence.template], words_for(sentence)
        # espeak reads English text as written, so the pieces are the transcript's own words
        return Spoken(pattern.format(**words), G.cut_at(pattern, key, words), words[key])

    def units(self, text: str) -> list[str]:
        return text.split()

    def word(self, slot: str, value: str) -> str:
        return SLOT_WORDS[slot][value].replace(" ", "_")

    def lexicon(self) -> tuple[str, str]:
        return "words.txt", "".join(f"{w}\n" for w in vocabulary())


@lru_cache(maxsize=1)
def vocabulary() -> list[str]:
    """Every word an English sentence of the grammar can contain, sorted."""
    words: set[str] = set()
    for template in G.TEMPLATES:
        for sentence in G.all_sentences(template):
            words.update(PATTERNS[template.name].format(**words_for(sentence)).split())
    return sorted(words)
