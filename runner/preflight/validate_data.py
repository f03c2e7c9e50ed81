"""`lockstep validate-data FILE...`: preflight's data checks on their own, before any config or run.

Every unreadable line, missing field, wrong type and malformed conversation is listed with file:line
(all of them, not preflight's first few); another file in another format than the first (the training
data) is an error; empty rows, duplicates and rows shared between the first file and the others are
warnings. The checks are preflight's own functions (data_checks), so both commands agree. With
`--config`, the files are read in that config's format and their token lengths are counted with its
tokenizer against its max_seq_len.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from runner.config import RunConfig
from runner.errors import DataError
from runner.preflight import data_checks
from runner.problems import MARKS, Check


def validate(files: Sequence[str], declared: str = "auto", config: RunConfig | None = None, stream: TextIO = sys.stdout) -> int:
    """Print every check of `files`; return how many failed."""
    splits = [data_checks.read_split(ref, ref, declared) for ref in files]
    for split in splits:
        _print_file(split, stream)
    usable = [split for split in splits if not split.problems]
    checks = [check for split in usable for check in data_checks.file_warnings(split)]
    if usable and usable[0] is splits[0]:
        checks += [check for other in usable[1:] for check in data_checks.against_training(usable[0], other)]
    if config is not None and usable:
        checks += [_tokens(split, config) for split in usable]
    for check in checks:
        _print_check(check, stream)
    failed = sum(1 for split in splits if split.problems) + sum(1 for check in checks if check.status == "error")
    warned = sum(1 for check in checks if check.status == "warning")
    print(f"{len(files)} file(s): {failed} failed, {warned} warning(s)", file=stream)
    return failed


def main(files: Sequence[str], declared: str, config: RunConfig | None) -> int:
    if validate(files, declared, config):
        raise DataError("the data has problems (listed above as file:line); fix or remove those lines, then validate again")
    return 0


def _print_file(split: data_checks.Split, stream: TextIO) -> None:
    if not split.problems:
        print(f"{MARKS['ok']} {split.path}: {len(split.rows)} rows, format {split.fmt}", file=stream)
        return
    print(f"{MARKS['error']} {split.path}: {len(split.problems)} problem(s)", file=stream)
    for problem in split.problems:
        print(f"    {problem}", file=stream)


def _print_check(check: Check, stream: TextIO) -> None:
    print(f"{MARKS[check.status]} {check.summary}", file=stream)
    if check.status != "ok" and check.fix:
        print(f"    fix: {check.fix}", file=stream)


def _tokens(split: data_checks.Split, config: RunConfig) -> Check:
    from runner.preflight import model_check

    check, _ = data_checks.check_tokens(split, model_check.load_tokenizer(config), config.train.max_seq_len)
    return check
