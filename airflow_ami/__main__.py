"""./bake's program: invoke over tasks.py, refusing a flag a task does not take with exit 2.

Invoke itself answers an unknown flag with "No idea what '--x' is!" and exit 1,
and a task's number flag given a word (`--keep abc`) with a traceback; here both
are bad input like any other: one line naming the flag, exit 2, before anything runs.
"""

from __future__ import annotations

import sys

from invoke import Exit, ParseError, Program

from airflow_ami.cli import EXIT_BAD_INPUT, refusal

UNKNOWN_FLAG = "No idea what '"
# What int() and float() say of a word, and the form the flag takes instead.
NOT_A_NUMBER = {
    "invalid literal for int()": "a whole number",
    "could not convert string to float": "a number",
}


class BakeProgram(Program):
    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            message = str(exc)
            task_name = exc.context.name if exc.context is not None else ""
            if message.startswith(UNKNOWN_FLAG) and task_name:
                flag = message[len(UNKNOWN_FLAG) :].split("'", 1)[0]
                raise Exit(refusal(task_name, flag), code=EXIT_BAD_INPUT) from None
            raise Exit(f"bake: {message}", code=EXIT_BAD_INPUT) from None
        except ValueError as exc:
            form = next((form for said, form in NOT_A_NUMBER.items() if str(exc).startswith(said)), None)
            if form is None:
                raise
            raise Exit(not_a_number(self.core.unparsed, str(exc), form), code=EXIT_BAD_INPUT) from None


def not_a_number(argv: list[str], error: str, form: str) -> str:
    """One line naming the flag whose value `error` (int()'s or float()'s) refused."""
    value = error.split(": ", 1)[1].strip("'")
    for i, token in enumerate(argv):
        if token.startswith("--") and (token.endswith(f"={value}") or argv[i + 1 : i + 2] == [value]):
            return f"bake: {token.split('=', 1)[0]} takes {form}, not {value!r}"
    return f"bake: a flag takes {form}, not {value!r}"


def main(argv: list[str] | None = None) -> None:
    BakeProgram(name="bake", binary="./bake").run(argv if argv is not None else ["bake", *sys.argv[1:]])


if __name__ == "__main__":
    main()
