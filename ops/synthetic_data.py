"""The bundled demo dataset: small word-manipulation instructions in alpaca format.

A randomly initialised 4-layer model frozen in 4-bit cannot answer them; LoRA adapters learn them in a
few minutes on two CPU cores and generalise to held-out rows (the answers are copies and rearrangements of
the input, which attention can learn, not facts to memorise). Regenerate with
`python -m ops.synthetic_data data/instructions.jsonl`; a test checks the shipped file matches.
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
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

TASKS = {
    "reverse": ("Reverse the order of the words.", lambda ws: " ".join(reversed(ws))),
    "copy": ("Repeat the words exactly.", lambda ws: " ".join(ws)),
    "first": ("Give the first word.", lambda ws: ws[0]),
    "last": ("Give the last word.", lambda ws: ws[-1]),
    "count": ("How many words are there?", lambda ws: NUMBER_WORDS[len(ws)]),
}


def generate(n_rows: int = 1500, seed: int = 1234) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    names = sorted(TASKS)
    for i in range(n_rows):
        instruction, answer = TASKS[names[i % len(names)]]
        words = rng.sample(WORDS, rng.randint(3, 6))
        rows.append({"instruction": instruction, "input": " ".join(words), "output": answer(words)})
    rng.shuffle(rows)
    return rows


def write_jsonl(rows: list[dict[str, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    write_jsonl(generate(), Path(sys.argv[1] if len(sys.argv) > 1 else "data/instructions.jsonl"))
