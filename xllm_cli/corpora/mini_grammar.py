"""The closed-domain grammar of the mini corpus: templates, slots, pinyin, held-out combinations.

Sentences are short smart-home / object requests (colours, objects, counts,
temperatures, times, dates, rooms), about 80 distinct characters, so that a tiny
recognizer trained from scratch on two CPU cores can learn them in minutes.

Every sentence is a *combination*: a template plus one value per slot. The
test and dev sets use combinations that never occur in training (nor in the LM
text): specific slot pairs (colour+object, count+object, month+day,
room+appliance) and template+value pairs (temperature, hour) are held out,
while every value on its own is still seen in training. That makes the test
measure generalisation, not memorisation of sentences.

Pinyin is written by hand for the few characters used (tone-numbered, 5 =
neutral tone) and fed to espeak-ng's ``cmn-latn-pinyin`` voice.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

# Character -> tone-numbered pinyin, for every character the grammar uses.
PINYIN: dict[str, str] = {
    # colours
    "红": "hong2", "黄": "huang2", "蓝": "lan2", "绿": "lv4", "白": "bai2", "黑": "hei1",
    "紫": "zi3", "橙": "cheng2", "色": "se4",
    # objects
    "灯": "deng1", "门": "men2", "杯": "bei1", "子": "zi5", "球": "qiu2", "花": "hua1",
    "车": "che1", "书": "shu1", "伞": "san3", "鱼": "yu2", "星": "xing1",
    # numbers
    "零": "ling2", "一": "yi1", "二": "er4", "两": "liang3", "三": "san1", "四": "si4", "五": "wu3",
    "六": "liu4", "七": "qi1", "八": "ba1", "九": "jiu3", "十": "shi2",
    # function words and verbs
    "把": "ba3", "的": "de5", "拿": "na2", "过": "guo4", "来": "lai2", "请": "qing3", "给": "gei3",
    "我": "wo3", "这": "zhe4", "是": "shi4", "桌": "zhuo1", "上": "shang4", "有": "you3", "个": "ge4",
    "想": "xiang3", "要": "yao4", "打": "da3", "开": "kai1", "关": "guan1",
    # devices, rooms, time
    "空": "kong1", "调": "tiao2", "到": "dao4", "度": "du4", "窗": "chuang1", "户": "hu5",
    "客": "ke4", "厅": "ting1", "卧": "wo4", "室": "shi4", "厨": "chu2", "房": "fang2",
    "明": "ming2", "天": "tian1", "点": "dian3", "叫": "jiao4", "起": "qi3", "床": "chuang2",
    "今": "jin1", "月": "yue4", "号": "hao4",
}

# (word, RGB) -- the image shows an object in this colour.
COLOURS: list[tuple[str, tuple[int, int, int]]] = [
    ("红色", (220, 30, 30)),
    ("黄色", (245, 215, 30)),
    ("蓝色", (30, 70, 225)),
    ("绿色", (30, 165, 55)),
    ("白色", (250, 250, 250)),
    ("黑色", (15, 15, 15)),
    ("紫色", (140, 50, 185)),
    ("橙色", (250, 130, 15)),
]
COLOUR_RGB = dict(COLOURS)
OBJECTS = ["灯", "门", "杯子", "球", "花", "车", "书", "伞", "鱼", "星星"]
OPENABLE = ["灯", "门", "书", "伞"]  # what 打开/关上 takes in the visual templates
COUNT_WORDS = {1: "一", 2: "两", 3: "三", 4: "四", 5: "五"}
ROOMS = ["客厅", "卧室", "厨房", "书房"]
APPLIANCES = ["灯", "空调", "窗户", "门"]
MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def number_word(n: int) -> str:
    """Chinese numeral for 0 < n < 100 (十一, 二十, 二十三)."""
    digits = "零一二三四五六七八九"
    if n < 10:
        return digits[n]
    tens, ones = divmod(n, 10)
    head = "" if tens == 1 else digits[tens]
    return head + "十" + (digits[ones] if ones else "")


def hour_word(h: int) -> str:
    return "两" if h == 2 else number_word(h)


@dataclass(frozen=True)
class Template:
    """A sentence pattern; ``{X}`` marks a slot, ``slots`` lists the values each slot takes."""

    name: str
    pattern: str
    slots: dict[str, tuple[str, ...]]
    visual: bool = False  # an image can show what the sentence says (colour/object/count)
    keys: tuple[str, ...] = ()  # slots the image shows: the word drowned in the noisy set
    weight: float = 1.0

    def fill(self, values: dict[str, str]) -> str:
        return self.pattern.format(**values)


_C = tuple(w for w, _ in COLOURS)
_O = tuple(OBJECTS)
_N = tuple(COUNT_WORDS[i] for i in range(1, 6))

TEMPLATES: list[Template] = [
    Template("take", "把{C}的{O}拿过来", {"C": _C, "O": _O}, True, ("C", "O"), 1.0),
    Template("give", "请给我{C}的{O}", {"C": _C, "O": _O}, True, ("C", "O"), 1.0),
    Template("this", "这是{C}的{O}", {"C": _C, "O": _O}, True, ("C", "O"), 1.0),
    Template("table", "桌上有{N}个{C}的{O}", {"N": _N, "C": _C, "O": _O}, True, ("N", "C", "O"), 1.2),
    Template("want", "我想要{N}个{O}", {"N": _N, "O": _O}, True, ("N", "O"), 1.0),
    Template("open", "把{C}的{O}打开", {"C": _C, "O": tuple(OPENABLE)}, True, ("C", "O"), 0.8),
    Template("close", "把{C}的{O}关上", {"C": _C, "O": tuple(OPENABLE)}, True, ("C", "O"), 0.8),
    Template("aircon", "把空调调到{T}度", {"T": tuple(number_word(t) for t in range(16, 31))}, weight=0.7),
    Template("alarm", "明天{H}点叫我起床", {"H": tuple(hour_word(h) for h in range(1, 13))}, weight=0.7),
    Template("date", "今天是{M}月{D}号", {"M": tuple(number_word(m) for m in range(1, 13)),
                                         "D": tuple(number_word(d) for d in range(1, 32))}, weight=0.8),
    Template("room_on", "打开{R}的{A}", {"R": tuple(ROOMS), "A": tuple(APPLIANCES)}, weight=0.5),
    Template("room_off", "关上{R}的{A}", {"R": tuple(ROOMS), "A": tuple(APPLIANCES)}, weight=0.5),
]
TEMPLATE_BY_NAME = {t.name: t for t in TEMPLATES}

# Slot pairs whose combinations are held out (a sentence is held out when any of
# its pairs is), and single slots held out per template.
PAIR_SLOTS = [("C", "O"), ("N", "O"), ("M", "D"), ("R", "A")]
SINGLE_SLOTS = {"aircon": "T", "alarm": "H"}


@dataclass(frozen=True)
class Sentence:
    """One combination: template, slot values, the text and its pinyin."""

    template: str
    values: tuple[tuple[str, str], ...]  # (slot, value) in pattern order

    @property
    def slots(self) -> dict[str, str]:
        return dict(self.values)

    @property
    def text(self) -> str:
        return TEMPLATE_BY_NAME[self.template].fill(self.slots)

    def pieces(self, key: str) -> list[tuple[str, bool]]:
        """The text cut around slot ``key``: [(before, False), (key word, True), (after, False)], empties dropped."""
        return cut_at(TEMPLATE_BY_NAME[self.template].pattern, key, self.slots)


def cut_at(pattern: str, key: str, values: dict[str, str]) -> list[tuple[str, bool]]:
    """``pattern`` filled with ``values`` and cut around slot ``key`` (see :meth:`Sentence.pieces`);
    pieces are stripped, since English words are separated by spaces (Mandarin text has none)."""
    before, after = pattern.split("{" + key + "}")
    parts = [(before.format(**values).strip(), False), (values[key], True), (after.format(**values).strip(), False)]
    return [(text, is_key) for text, is_key in parts if text]


def _valid(template: Template, values: dict[str, str]) -> bool:
    if "M" in values and "D" in values:  # no 二月三十号
        month = template.slots["M"].index(values["M"]) + 1
        day = template.slots["D"].index(values["D"]) + 1
        return day <= MONTH_DAYS[month - 1]
    return True


def all_sentences(template: Template) -> list[Sentence]:
    names = [name for name in _slot_order(template.pattern)]
    out = []
    for combo in itertools.product(*(template.slots[n] for n in names)):
        values = dict(zip(names, combo))
        if _valid(template, values):
            out.append(Sentence(template.name, tuple(zip(names, combo))))
    return out


def _slot_order(pattern: str) -> list[str]:
    names, i = [], 0
    while (j := pattern.find("{", i)) >= 0:
        k = pattern.index("}", j)
        names.append(pattern[j + 1 : k])
        i = k + 1
    return names


def pinyin_syllables(text: str) -> list[str]:
    """Tone-numbered pinyin per character of ``text``, with the tone sandhi a speaker applies:
    3-3 -> 2-3 (我想 wo2 xiang3) and 一个 -> yi2 ge4."""
    syllables = [PINYIN[ch] for ch in text]
    for i in range(len(syllables) - 1):
        if syllables[i].endswith("3") and syllables[i + 1].endswith("3"):
            syllables[i] = syllables[i][:-1] + "2"
        if text[i] == "一" and text[i + 1] == "个":
            syllables[i] = "yi2"
    return syllables


def to_pinyin(text: str) -> str:
    return " ".join(pinyin_syllables(text))


@dataclass
class Holdout:
    """Which combinations belong to test and dev (everything else is training material)."""

    test_pairs: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)
    dev_pairs: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)
    test_single: dict[str, set[str]] = field(default_factory=dict)
    dev_single: dict[str, set[str]] = field(default_factory=dict)

    def pool(self, s: Sentence) -> str:
        """The pool of a sentence: "test", "dev" or "train"."""
        slots = s.slots
        for which, pairs, single in (("test", self.test_pairs, self.test_single),
                                     ("dev", self.dev_pairs, self.dev_single)):
            for (a, b), held in pairs.items():
                if a in slots and b in slots and (slots[a], slots[b]) in held:
                    return which
            slot = SINGLE_SLOTS.get(s.template)
            if slot and slots[slot] in single.get(s.template, set()):
                return which
        return "train"


def _covering_pairs(rng: random.Random, first: list[str], second: list[str], count: int,
                    avoid: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """``count`` distinct pairs that use every value of both lists when count allows
    (so each colour and each object is tested) and none of ``avoid``."""
    pairs: set[tuple[str, str]] = set()
    a_order, b_order = first[:], second[:]
    rng.shuffle(a_order)
    rng.shuffle(b_order)
    i = 0
    while len(pairs) < count and i < 10 * count + 100:
        pair = (a_order[i % len(a_order)], b_order[(i + i // len(b_order)) % len(b_order)])
        if pair not in avoid:
            pairs.add(pair)
        i += 1
    return pairs


def make_holdout(seed: int) -> Holdout:
    """Deterministic held-out combinations for ``seed``."""
    rng = random.Random(f"mini-holdout-{seed}")
    h = Holdout()
    spaces = {
        ("C", "O"): (list(_C), list(_O), 10, 6),
        ("N", "O"): (list(_N), list(_O), 8, 5),
        ("M", "D"): ([number_word(m) for m in range(1, 13)], [number_word(d) for d in range(1, 29)], 36, 18),
        ("R", "A"): (list(ROOMS), list(APPLIANCES), 3, 2),
    }
    for pair, (first, second, n_test, n_dev) in spaces.items():
        h.test_pairs[pair] = _covering_pairs(rng, first, second, n_test, set())
        h.dev_pairs[pair] = _covering_pairs(rng, first, second, n_dev, h.test_pairs[pair])
    for name, slot in SINGLE_SLOTS.items():
        values = list(TEMPLATE_BY_NAME[name].slots[slot])
        rng.shuffle(values)
        h.test_single[name] = set(values[:3])
        h.dev_single[name] = set(values[3:4])
    return h


def sentence_pools(holdout: Holdout) -> dict[str, dict[str, list[Sentence]]]:
    """pool ("train"/"dev"/"test") -> template name -> its sentences in that pool."""
    pools: dict[str, dict[str, list[Sentence]]] = {"train": {}, "dev": {}, "test": {}}
    for template in TEMPLATES:
        for s in all_sentences(template):
            pools[holdout.pool(s)].setdefault(template.name, []).append(s)
    return pools


def sample_sentences(rng: random.Random, pool: dict[str, list[Sentence]], n: int,
                     visual_only: bool = False) -> list[Sentence]:
    """``n`` sentences: a template by weight, then a uniform combination of it."""
    names = [t.name for t in TEMPLATES if t.name in pool and pool[t.name] and (t.visual or not visual_only)]
    weights = [TEMPLATE_BY_NAME[n].weight for n in names]
    out = []
    for _ in range(n):
        name = rng.choices(names, weights)[0]
        out.append(rng.choice(pool[name]))
    return out


def vocabulary() -> list[str]:
    """Every character the grammar can produce, sorted."""
    chars: set[str] = set()
    for template in TEMPLATES:
        chars.update(ch for ch in template.pattern if ch not in "{}" and not ch.isascii())
        for values in template.slots.values():
            for v in values:
                chars.update(v)
    return sorted(chars)
