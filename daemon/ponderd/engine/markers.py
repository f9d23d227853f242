"""The thinking markers a model's chat template names, if it names any. Pure string work.

Reasoning models' templates mention their markers (to strip old thinking from
history, or to open the block in the generation prompt): Qwen3 and DeepSeek-R1
`<think>`/`</think>`, others `<thinking>`, `<|begin_of_thought|>`/`<|end_of_thought|>`,
`<|START_THINKING|>`/`<|END_THINKING|>`. Where the template names none, Ponder
uses `<think>`/`</think>` as before.
"""

from __future__ import annotations

import re

DEFAULT = ("<think>", "</think>")

# Pairs whose names differ between opening and closing, checked before the generic <x>/</x> form.
_PAIRS = (
    ("<|begin_of_thought|>", "<|end_of_thought|>"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
    ("<|begin_of_thinking|>", "<|end_of_thinking|>"),
)
# An XML-like tag whose name mentions thinking or reasoning: <think>, <thinking>, <reasoning>.
_TAG = re.compile(r"<(/?)((?:[A-Za-z_]*)(?:think|thought|reason)(?:[A-Za-z_]*))>", re.IGNORECASE)


def think_markers(template: str | None) -> tuple[str, str] | None:
    """(open, close) markers named by a chat template, or None when it names none."""
    if not template:
        return None
    for pair in _PAIRS:
        if pair[0] in template and pair[1] in template:
            return pair
    opened: list[str] = []
    closed: set[str] = set()
    for m in _TAG.finditer(template):
        (closed.add if m.group(1) else opened.append)(m.group(2))
    for name in opened:
        if name in closed:
            return f"<{name}>", f"</{name}>"
    # A template that only strips old thinking may name the closing tag alone (`split('</think>')`).
    for name in sorted(closed):
        return f"<{name}>", f"</{name}>"
    return None
