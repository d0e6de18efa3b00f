"""The bundled demo dataset: small questions about word lists, in alpaca format.

A randomly initialised 4-layer model frozen in 4-bit answers none of them; LoRA adapters learn most of them
in a few minutes on two CPU cores and answer held-out lists they never saw. What is learnable was measured,
not assumed (600 steps, r=16): counting tasks, which need only an average over the list, reach ~0.67 exact
match on held-out rows; copying a word ("first word") stays near zero, since that needs sharp attention
that LoRA on a random frozen base does not learn in that budget. It is kept as the honest hard case.
Regenerate with `python -m ops.data.synthetic data/instructions.jsonl`; a test checks the shipped file.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

WORDS = (
    "apple river stone cloud tiger pencil garden window silver orange rabbit candle forest mirror bottle "
    "yellow planet guitar honey castle dragon violet pepper rocket summer winter anchor basket butter "
    "camera copper desert engine feather ginger harbor island jacket kettle lemon marble needle ocean "
    "paper quartz saddle thunder velvet wagon zebra almond bridge cactus dolphin falcon glacier hammer"
).split()
ANIMALS = frozenset("tiger rabbit dragon zebra dolphin falcon".split())
COLORS = frozenset("silver orange yellow violet copper ginger".split())
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

TASKS = {
    "count": ("How many words are there?", lambda ws: NUMBER_WORDS[len(ws)]),
    "animals": ("How many animals are in the list?", lambda ws: NUMBER_WORDS[sum(w in ANIMALS for w in ws)]),
    "colors": ("How many colors are in the list?", lambda ws: NUMBER_WORDS[sum(w in COLORS for w in ws)]),
    "any_animal": ("Is there an animal in the list?", lambda ws: "yes" if any(w in ANIMALS for w in ws) else "no"),
    "first": ("Give the first word.", lambda ws: ws[0]),
}


def generate(n_rows: int = 1500, seed: int = 1234) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    names = list(TASKS)
    for i in range(n_rows):
        instruction, answer = TASKS[names[i % len(names)]]
        words = rng.sample(WORDS, rng.randint(3, 6))
        rows.append({"instruction": instruction, "input": " ".join(words), "output": answer(words)})
    rng.shuffle(rows)
    return rows


def generate_variable_length(n_rows: int = 600, min_words: int = 1, max_words: int = 200,
                             seed: int = 1234) -> list[dict[str, str]]:
    """Rows whose outputs run from `min_words` to `max_words` words (uniform), for packing and length grouping.

    Each row asks for the words that follow a given one in `WORDS` (wrapping around), so the answer is
    deterministic and learnable; only its length varies, which is what makes padded batches wasteful.

    Args:
        n_rows: rows to generate.
        min_words, max_words: bounds of the output length in words, both included.
        seed: seed of the lengths and start words.
    Returns:
        alpaca-format rows (instruction, input, output).
    Raises:
        ValueError: bounds that are not 1 <= min_words <= max_words.
    """
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        n, start = rng.randint(min_words, max_words), rng.randrange(len(WORDS))
        words = [WORDS[(start + 1 + k) % len(WORDS)] for k in range(n)]
        rows.append({"instruction": f"List the {n} words that follow.", "input": WORDS[start],
                     "output": " ".join(words)})
    return rows


def write_jsonl(rows: list[dict[str, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    write_jsonl(generate(), Path(sys.argv[1] if len(sys.argv) > 1 else "data/instructions.jsonl"))
