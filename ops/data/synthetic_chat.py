"""Multi-turn chat data on the bundled word-list questions: one list, then two to four questions about it.

Only the first user turn gives the list, so answering a later question needs the earlier turns: a model trained on
the last reply alone sees one such answer per conversation, one trained on every assistant turn sees them all.
Regenerate with `python -m ops.data.synthetic_chat out.jsonl`.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from .synthetic import TASKS, WORDS, write_jsonl

SYSTEM = "Answer with one word."


def generate_conversations(n_rows: int = 300, seed: int = 1234, min_turns: int = 2,
                           max_turns: int = 4) -> list[dict[str, list[dict[str, str]]]]:
    """Chat rows (`messages`): a system message, then `min_turns`..`max_turns` user/assistant pairs about one list.

    Args:
        n_rows: conversations to make.
        seed: seeds the lists, questions and turn counts.
        min_turns, max_turns: assistant turns per conversation, at most the number of tasks (5).
    Returns:
        Rows in the chat format, the first user turn "Words: <list>\\n<question>", later ones the question alone.
    Raises:
        ValueError: turn counts outside 1..5 or min_turns > max_turns.
    """
    if not 1 <= min_turns <= max_turns <= len(TASKS):
        raise ValueError(f"turns must satisfy 1 <= min_turns <= max_turns <= {len(TASKS)}, got {min_turns}..{max_turns}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        words = rng.sample(WORDS, rng.randint(3, 6))
        tasks = rng.sample(sorted(TASKS), rng.randint(min_turns, max_turns))
        messages = [{"role": "system", "content": SYSTEM}]
        for k, task in enumerate(tasks):
            question, answer = TASKS[task]
            text = f"Words: {' '.join(words)}\n{question}" if k == 0 else question
            messages += [{"role": "user", "content": text}, {"role": "assistant", "content": answer(words)}]
        rows.append({"messages": messages})
    return rows


if __name__ == "__main__":
    out, rows = Path(sys.argv[1] if len(sys.argv) > 1 else "chat.jsonl"), generate_conversations()
    write_jsonl(rows, out)
    print(f"wrote {len(rows)} conversations to {out}")
