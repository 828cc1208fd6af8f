"""Seeded synthetic biographies for fact-memorisation experiments (pure: ``random.Random``, no model).

Each person has a unique name and five facts (the *fields*): birth date, birth city,
university, major and company. A biography is one sentence per field, in a shuffled
order, each drawn from several templates; the first sentence names the person and the
rest use a pronoun. Two renderings come out of the same draw:

* ``text``: the clean training text;
* ``tagged``: the same text with every answer span wrapped in ``<field>...</field>``
  (e.g. ``<birth_city>Leeds</birth_city>``); removing the tags gives ``text`` exactly.

Questions are data too (:data:`QUESTIONS`), one template per field. All word lists
and templates below were written for this project; the company names are invented.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from attn_transition.errors import UsageError, did_you_mean

__all__ = ["DATA_VERSION", "FIELDS", "TEMPLATES", "QUESTIONS", "Biography", "generate", "strip_tags",
           "tagged_spans", "question", "to_record", "from_record"]

DATA_VERSION = "bio-v1"
FIELDS: tuple[str, ...] = ("birth_date", "birth_city", "university", "major", "company")

FEMALE_FIRST = ("Alice", "Beatrice", "Clara", "Daphne", "Elena", "Fiona", "Greta", "Helena", "Irene", "Joanna",
                "Karla", "Lydia", "Marta", "Nadia", "Olive", "Paula", "Rosa", "Sylvia", "Tamara", "Vera")
MALE_FIRST = ("Adrian", "Bruno", "Cedric", "Dorian", "Emil", "Felix", "Gordon", "Hugo", "Ivan", "Jonas",
              "Kasper", "Leon", "Marcus", "Nolan", "Oscar", "Pavel", "Rupert", "Silas", "Tobias", "Victor")
LAST = ("Abernathy", "Blackwood", "Castellan", "Dunmore", "Ellery", "Fairweather", "Galloway", "Hargrove",
        "Ingram", "Jessop", "Kettering", "Lindqvist", "Marchetti", "Northcott", "Oakhurst", "Pemberton",
        "Quennell", "Rowntree", "Stanhope", "Thornbury", "Underhill", "Valdez", "Whitlock", "Yardley")
CITIES = ("Leeds", "Porto", "Krakow", "Lyon", "Tucson", "Osaka", "Perth", "Bergen", "Valencia", "Tampere",
          "Quebec City", "Nairobi", "Cordoba", "Adelaide", "Graz", "Halifax", "Bilbao", "Utrecht", "Dresden",
          "Savannah", "Brno", "Cork", "Malmo", "Trieste", "Winnipeg", "Ghent", "Aarhus", "Sapporo")
UNIVERSITIES = ("Northfield University", "the University of Westmere", "Harlow Institute of Technology",
                "Brackenridge College", "the University of Eastvale", "Kingsbury University",
                "Redmond Polytechnic", "Ashford State University", "the Coastal University of Marlow",
                "Penrose College", "Galway Bay University", "the Royal Institute of Dunmoor",
                "Silverlake University", "Ostrander College", "the University of Highcliff",
                "Thamesford University")
MAJORS = ("Chemical Engineering", "Art History", "Marine Biology", "Economics", "Linguistics", "Astrophysics",
          "Civil Engineering", "Philosophy", "Statistics", "Architecture", "Neuroscience", "Music Theory",
          "Materials Science", "Political Science", "Geology", "Computer Science", "Nursing", "Anthropology")
COMPANIES = ("Brightwater Analytics", "Copperleaf Foods", "Halvorsen Shipping", "Nimbus Robotics",
             "Orchard Lane Publishing", "Pinecrest Energy", "Quartzline Optics", "Redfern Logistics",
             "Saltmarsh Pharmaceuticals", "Tidewell Insurance", "Umberfield Motors", "Vantor Aerospace",
             "Willowgate Textiles", "Zephyr Telecom", "Amberly Bank", "Coldharbour Software",
             "Elmstead Construction", "Fernvale Media", "Grayson Biotech", "Larkspur Retail")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")

# {S}: subject at the start of a sentence (the name in the first sentence, then He/She);
# {P}: possessive at the start (Name's, then His/Her); {p}: possessive inside a sentence;
# {s}: subject pronoun inside a sentence; {v}: the field's value.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_date": ("{S} was born on {v}.", "{S} came into the world on {v}.", "{P} date of birth is {v}.",
                   "{S} entered this world on {v}."),
    "birth_city": ("{S} was born in {v}.", "{P} birthplace is {v}.", "{S} is a native of {v}.",
                   "{S} grew up in {v}, where {s} was born."),
    "university": ("{S} studied at {v}.", "{S} graduated from {v}.", "{S} received {p} education at {v}.",
                   "{S} attended {v}."),
    "major": ("{S} majored in {v}.", "{P} field of study was {v}.", "{S} earned a degree in {v}.",
              "{S} chose {v} as {p} major."),
    "company": ("{S} works for {v}.", "{S} is employed by {v}.", "{P} employer is {v}.", "{S} has a job at {v}."),
}
QUESTIONS: dict[str, str] = {
    "birth_date": "What is the date of birth of {name}?",
    "birth_city": "In which city was {name} born?",
    "university": "Which university did {name} attend?",
    "major": "What did {name} study?",
    "company": "Which company does {name} work for?",
}
assert set(TEMPLATES) == set(FIELDS) == set(QUESTIONS), (sorted(TEMPLATES), FIELDS, sorted(QUESTIONS))

_TAG = re.compile(r"</?([a-z_]+)>")


@dataclass(frozen=True)
class Biography:
    person_id: int
    name: str
    gender: str              # "f" or "m" (chooses the pronouns)
    fields: dict[str, str]   # field -> value, every key of FIELDS
    text: str                # clean training text
    tagged: str              # text with <field>value</field> around each answer span


def _draw_fields(rng: random.Random) -> dict[str, str]:
    day, month, year = rng.randint(1, 28), rng.choice(MONTHS), rng.randint(1950, 2002)
    return {"birth_date": f"{day} {month} {year}", "birth_city": rng.choice(CITIES),
            "university": rng.choice(UNIVERSITIES), "major": rng.choice(MAJORS), "company": rng.choice(COMPANIES)}


def _sentence(template: str, value: str, name: str, gender: str, first: bool) -> str:
    he, his = ("She", "Her") if gender == "f" else ("He", "His")
    return template.format(S=name if first else he, P=f"{name}'s" if first else his, p=his.lower(),
                           s=he.lower(), v=value)


def _capitalise(sentence: str) -> str:
    # A value such as "the University of Westmere" may open a sentence only after the subject,
    # so only the first letter of the whole sentence needs care.
    return sentence[:1].upper() + sentence[1:]


def generate(count: int, seed: int = 0, *, shuffle_fields: bool = True) -> list[Biography]:
    """``count`` biographies with distinct names; the same ``(count, seed)`` gives the same list."""
    names = [(first, last, g) for g, firsts in (("f", FEMALE_FIRST), ("m", MALE_FIRST))
             for first in firsts for last in LAST]
    if not 1 <= count <= len(names):
        raise UsageError(f"the number of biographies must be in [1, {len(names)}], got {count}")
    rng = random.Random(f"{DATA_VERSION}:{seed}")
    chosen = rng.sample(names, count)
    people = []
    for person_id, (first, last, gender) in enumerate(chosen):
        name = f"{first} {last}"
        fields = _draw_fields(rng)
        order = list(FIELDS)
        if shuffle_fields:
            rng.shuffle(order)
        clean, tagged = [], []
        for position, field in enumerate(order):
            template = rng.choice(TEMPLATES[field])
            value = fields[field]
            clean.append(_capitalise(_sentence(template, value, name, gender, position == 0)))
            tagged.append(_capitalise(_sentence(template, f"<{field}>{value}</{field}>", name, gender,
                                                position == 0)))
        people.append(Biography(person_id, name, gender, fields, " ".join(clean), " ".join(tagged)))
    return people


def strip_tags(tagged: str) -> str:
    return _TAG.sub("", tagged)


def tagged_spans(tagged: str) -> list[tuple[str, str, int, int]]:
    """``(field, value, start, end)`` of each tagged span, with offsets into the *clean* text."""
    spans = []
    removed = 0
    open_field, open_at = None, 0
    for match in _TAG.finditer(tagged):
        here = match.start() - removed
        if not match.group(0).startswith("</"):
            open_field, open_at = match.group(1), here
        else:
            assert open_field == match.group(1), f"unbalanced tags near {tagged[match.start():match.end()+20]!r}"
            spans.append((open_field, strip_tags(tagged)[open_at:here], open_at, here))
            open_field = None
        removed += match.end() - match.start()
    return spans


def question(field: str, name: str) -> str:
    if field not in QUESTIONS:
        extra = did_you_mean(field, QUESTIONS)
        raise UsageError(f"unknown field {field!r}{extra}; fields: {', '.join(FIELDS)}")
    return QUESTIONS[field].format(name=name)


def to_record(bio: Biography) -> dict[str, Any]:
    record = asdict(bio)
    record["data_version"] = DATA_VERSION
    return record


def from_record(record: dict[str, Any]) -> Biography:
    try:
        return Biography(int(record["person_id"]), record["name"], record["gender"], dict(record["fields"]),
                         record["text"], record["tagged"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"a biography record lacks {exc}; regenerate it with 'attn-transition clues "
                         f"biographies'") from None


def check_fields(bios: Sequence[Biography]) -> None:
    """Every biography has every field, and its tagged spans carry exactly those values."""
    for bio in bios:
        spans = {field: value for field, value, _, _ in tagged_spans(bio.tagged)}
        assert spans == bio.fields, f"biography {bio.person_id}: tags {spans} != fields {bio.fields}"
