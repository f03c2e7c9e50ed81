"""The README's exit-code table is the code's: every code lockstep returns is in it, and nothing else."""

from __future__ import annotations

import re

from runner import errors
from tests.helpers import REPO_ROOT

OUTSIDE_THE_ERROR_FAMILY = {0: "success", 1: "an unexpected exception", 2: "argparse's usage errors", 130: "Ctrl-C (run_command)"}


def _subclasses(cls: type) -> list[type]:
    return [cls, *(grand for sub in cls.__subclasses__() for grand in _subclasses(sub))]


def readme_codes() -> dict[int, str]:
    text = (REPO_ROOT / "README.md").read_text()
    table = text[text.index("Exit codes:"):].split("\n\n")[1]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", table, flags=re.MULTILINE)}


def test_the_readme_table_lists_exactly_the_codes_lockstep_returns():
    raised = {cls.exit_code for cls in _subclasses(errors.LockstepError) if cls is not errors.LockstepError}
    assert set(readme_codes()) == raised | set(OUTSIDE_THE_ERROR_FAMILY)


def test_each_error_class_is_described_where_its_code_is():
    codes = readme_codes()
    assert "requeue" in codes[errors.StoppedForRequeue.exit_code] and "preflight" in codes[errors.PreflightError.exit_code]
    assert "limits" in codes[errors.LimitError.exit_code] and "lock" in codes[errors.StackError.exit_code]
