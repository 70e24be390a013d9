"""Write the bundled instruction-following prompt set, rlhf/data/prompts.jsonl, deterministically.

    python scripts/make_prompt_set.py                      # rewrite rlhf/data/prompts.jsonl
    python scripts/make_prompt_set.py --out /tmp/p.jsonl   # somewhere else (tests compare the two)

Every prompt is an everyday task (topic x task template) followed by the instruction sentences of one to
three verifiable constraints (rlhf/constraints.py). Constraints are drawn with weights that favour the
ones a 135M model sometimes meets, so preference data carries signal, and a draw that conflicts with the
prompt's earlier constraints is redrawn. Whole topics are held out: no held-out prompt shares a topic
(and so no prompt text) with a train prompt.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlhf.constraints import find_conflict, instruction_text, validate_constraint  # noqa: E402

SEED = 20240611
DEFAULT_OUT = ROOT / "rlhf" / "data" / "prompts.jsonl"

# Activities take "how to" templates; subjects take "explain" templates. (category, phrase)
ACTIVITIES = [
    ("cooking", "baking sourdough bread"), ("cooking", "cooking rice on the stove"),
    ("cooking", "meal prepping for the week"), ("cooking", "making a simple vegetable soup"),
    ("cooking", "cooking for a picky child"), ("cooking", "storing fresh herbs"),
    ("cooking", "grilling vegetables"), ("cooking", "making pancakes from scratch"),
    ("travel", "packing light for a weekend trip"), ("travel", "traveling by train across Europe"),
    ("travel", "planning a road trip"), ("travel", "dealing with jet lag"),
    ("travel", "finding cheap flights"), ("travel", "camping for the first time"),
    ("travel", "visiting a museum with kids"),
    ("health", "drinking more water"), ("health", "getting better sleep"),
    ("health", "starting a morning stretching routine"), ("health", "walking ten thousand steps a day"),
    ("health", "reducing screen time before bed"), ("health", "eating more vegetables"),
    ("health", "taking short breaks at a desk job"),
    ("money", "saving money on groceries"), ("money", "making a monthly budget"),
    ("money", "building an emergency fund"), ("money", "paying off a credit card"),
    ("money", "tracking daily spending"), ("money", "buying a used car"),
    ("work", "running a short team meeting"), ("work", "writing a clear email"),
    ("work", "preparing for a job interview"), ("work", "working from home"),
    ("work", "asking for a raise"), ("work", "managing a busy week"),
    ("work", "giving feedback to a coworker"),
    ("tech", "choosing a strong password"), ("tech", "backing up phone photos"),
    ("tech", "speeding up an old laptop"), ("tech", "spotting phishing emails"),
    ("tech", "organizing computer files"), ("tech", "learning to type faster"),
    ("pets", "training a puppy to sit"), ("pets", "caring for a goldfish"),
    ("pets", "walking a dog in hot weather"), ("pets", "introducing a new cat to the home"),
    ("pets", "keeping a rabbit healthy"),
    ("gardening", "growing tomatoes on a balcony"), ("gardening", "composting kitchen scraps"),
    ("gardening", "watering houseplants"), ("gardening", "starting a herb garden"),
    ("gardening", "keeping weeds out of a garden"),
    ("sports", "starting to run"), ("sports", "learning to swim as an adult"),
    ("sports", "warming up before football"), ("sports", "riding a bike in the city"),
    ("sports", "playing tennis with friends"), ("sports", "stretching after a workout"),
    ("home", "cleaning a kitchen quickly"), ("home", "decluttering a bedroom"),
    ("home", "doing laundry without fading colors"), ("home", "saving energy at home"),
    ("hobbies", "learning to play the guitar"), ("hobbies", "reading more books"),
    ("hobbies", "keeping a journal"), ("hobbies", "taking photos with a phone"),
    ("learning", "learning a new language"), ("learning", "studying for an exam"),
    ("learning", "taking good notes in class"),
]
SUBJECTS = [
    ("science", "the water cycle"), ("science", "how rainbows form"), ("science", "why the sky is blue"),
    ("science", "how vaccines work"), ("science", "photosynthesis"), ("science", "gravity"),
    ("science", "the phases of the moon"), ("science", "how magnets work"), ("science", "why leaves change color"),
    ("science", "how volcanoes erupt"), ("science", "the human heart"), ("science", "how sound travels"),
    ("science", "why we dream"), ("science", "how bees make honey"),
    ("history", "the ancient pyramids of Egypt"), ("history", "the printing press"),
    ("history", "the first moon landing"), ("history", "the Roman roads"), ("history", "the invention of the telephone"),
    ("history", "the Great Wall of China"), ("history", "the history of the bicycle"),
    ("history", "the Silk Road"), ("history", "the Wright brothers"),
    ("tech", "how the internet works"), ("tech", "what a computer virus is"), ("tech", "how GPS works"),
    ("tech", "cloud storage"), ("tech", "how batteries store energy"),
    ("money", "compound interest"), ("money", "how inflation works"), ("money", "what a credit score is"),
    ("health", "why sleep matters"), ("health", "the benefits of walking"), ("health", "how caffeine affects the body"),
    ("nature", "how birds migrate"), ("nature", "coral reefs"), ("nature", "why cats purr"),
    ("nature", "how trees talk through roots"), ("nature", "the life of a butterfly"),
    ("culture", "the history of chess"), ("culture", "why people celebrate birthdays"),
    ("culture", "the Olympic Games"), ("culture", "how a library works"),
]

ACTIVITY_TEMPLATES = [
    "Give tips for {t}.",
    "Explain how to get started with {t}.",
    "List common mistakes people make when {t}.",
    "Write a short note to a friend about {t}.",
    "Describe a simple plan for {t}.",
    "What should a beginner know about {t}?",
]
SUBJECT_TEMPLATES = [
    "Explain {t} in simple terms.",
    "Write a short note about {t}.",
    "Describe {t} for a curious ten-year-old.",
    "Summarize the key facts about {t}.",
    "What is interesting about {t}?",
    "Tell a friend about {t}.",
]
PROMPTS_PER_TOPIC = 4
HELDOUT_EVERY = 5  # every fifth topic (in a seeded shuffle) is held out

STOPWORDS = set(
    "a an the of on for to in at by with and or how why what is are as from into out up down new old first "
    "short simple after before more less good better quickly without across through that this it its weekend "
    "daily day week monthly people kids child friends home works work make makes matters affects change "
    "talk through making getting taking doing dealing finding starting keeping learning playing riding "
    "choosing caring walking buying paying asking giving running writing preparing managing".split()
)
GENERIC_KEYWORDS = ["simple", "time", "easy", "start", "habit", "plan", "important", "fun", "practice", "help"]
START_WORDS = ["Sure", "Yes", "First", "Well", "Today", "Here", "Okay", "Great"]
END_PHRASES = [
    "Is there anything else I can help with?", "Hope this helps.", "Thanks for reading.",
    "Have a great day!", "That is all.", "Good luck!",
]
EXCLUDE_WORDS = ["very", "really", "also", "just", "important", "things", "good", "always"]

# (type, weight): the simple ones a small model sometimes meets come up most often.
WEIGHTS = {
    "lowercase": 6, "no_commas": 6, "max_words": 6, "end_phrase": 5, "start_word": 6, "include_keywords": 6,
    "bullet_count": 5, "json_format": 4, "postscript": 5, "min_words": 3, "exclude_word": 4, "uppercase": 2,
    "max_sentences": 3, "title": 3, "quotation": 3, "paragraph_count": 2, "highlight_count": 2,
    "placeholder_count": 2, "max_lines": 2, "keyword_frequency": 2,
}


def topic_keywords(phrase: str) -> list[str]:
    """Content words of a topic phrase: natural keywords for "include the keyword ..." constraints."""
    words = re.findall(r"[A-Za-z]+", phrase)
    return [w for w in words if w.lower() not in STOPWORDS and len(w) >= 3 and not (len(w) == 3 and w.islower())]


def draw_params(ctype: str, rng: random.Random, phrase: str) -> dict:
    own = topic_keywords(phrase) or ["plan"]
    if ctype == "bullet_count":
        return {"n": rng.choice([2, 3, 4])}
    if ctype == "max_words":
        return {"n": rng.choice([25, 30, 40, 50, 60])}
    if ctype == "min_words":
        return {"n": rng.choice([30, 40, 60])}
    if ctype == "end_phrase":
        return {"phrase": rng.choice(END_PHRASES)}
    if ctype == "start_word":
        return {"word": rng.choice(START_WORDS)}
    if ctype == "include_keywords":
        keywords = [rng.choice(own)]
        if rng.random() < 0.5:
            keywords.append(rng.choice([k for k in GENERIC_KEYWORDS if k not in keywords]))
        return {"keywords": keywords}
    if ctype == "exclude_word":
        return {"word": rng.choice(EXCLUDE_WORDS)}
    if ctype == "keyword_frequency":
        return {"word": rng.choice(own), "n": rng.choice([2, 3])}
    if ctype == "paragraph_count":
        return {"n": rng.choice([2, 3])}
    if ctype == "max_sentences":
        return {"n": rng.choice([2, 3, 4, 5])}
    if ctype == "highlight_count":
        return {"n": rng.choice([1, 2, 3])}
    if ctype == "placeholder_count":
        return {"n": rng.choice([1, 2])}
    if ctype == "max_lines":
        return {"n": rng.choice([3, 4, 5])}
    return {}


def draw_constraints(rng: random.Random, phrase: str) -> list[dict]:
    count = rng.choices([1, 2, 3], weights=[4, 4, 2])[0]
    types, weights = list(WEIGHTS), list(WEIGHTS.values())
    chosen: list[dict] = []
    while len(chosen) < count:
        ctype = rng.choices(types, weights=weights)[0]
        candidate = {"type": ctype, "params": draw_params(ctype, rng, phrase)}
        if find_conflict(chosen + [candidate]) is None:
            chosen.append(candidate)
    return chosen


def build_prompt_set(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    topics = [(cat, "activity", t) for cat, t in ACTIVITIES] + [(cat, "subject", t) for cat, t in SUBJECTS]
    order = list(range(len(topics)))
    rng.shuffle(order)
    heldout = {i for rank, i in enumerate(order) if rank % HELDOUT_EVERY == 0}
    rows = []
    for i, (category, kind, phrase) in enumerate(topics):
        templates = ACTIVITY_TEMPLATES if kind == "activity" else SUBJECT_TEMPLATES
        for j, template in enumerate(rng.sample(templates, PROMPTS_PER_TOPIC)):
            constraints = draw_constraints(rng, phrase)
            for c in constraints:
                validate_constraint(c)
            task = template.format(t=phrase)
            rows.append({
                "id": f"if-{i:03d}-{j}",
                "prompt": " ".join([task] + [instruction_text(c) for c in constraints]),
                "topic": phrase,
                "category": category,
                "task": task,
                "constraints": constraints,
                "split": "heldout" if i in heldout else "train",
            })
    return rows


def write_prompt_set(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")  # never leave a half-written file behind
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSONL (default: the bundled file)")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed; the bundled file uses the default")
    args = parser.parse_args(argv)
    rows = build_prompt_set(args.seed)
    write_prompt_set(rows, args.out)
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "heldout")}
    print(f"wrote {len(rows)} prompts to {args.out} ({splits['train']} train, {splits['heldout']} heldout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
