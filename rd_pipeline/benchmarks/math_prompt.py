"""The zero-shot chain-of-thought prompt shared by the math benchmarks."""

from __future__ import annotations


def math_prompt(question: str, *, allow_none: bool = False) -> str:
    """Question, then a request to reason step by step and finish with "The answer is N."."""
    lines = [
        f"Question: {question.strip()}",
        "",
        "Think step by step. Finish your response with a final line of the form "
        '"The answer is N." where N is the final number, written without units.',
    ]
    if allow_none:
        lines.append(
            "If the question does not give enough information to find the answer, explain what is missing "
            'and finish with "The answer is None."'
        )
    return "\n".join(lines)
