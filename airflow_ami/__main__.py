"""./bake's program: invoke over tasks.py, refusing a flag a task does not take with exit 2.

Invoke itself answers an unknown flag with "No idea what '--x' is!" and exit 1;
here it is bad input like any other: one line naming the flag and whose setting
it is, exit 2, before anything runs.
"""

from __future__ import annotations

import sys

from invoke import Exit, ParseError, Program

from airflow_ami.cli import EXIT_BAD_INPUT, refusal

UNKNOWN_FLAG = "No idea what '"


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


def main(argv: list[str] | None = None) -> None:
    BakeProgram(name="bake", binary="./bake").run(argv if argv is not None else ["bake", *sys.argv[1:]])


if __name__ == "__main__":
    main()
