"""The attack test: every malformed or awkward input gets a clear error or a correct, flagged result.

The cases (images of every format the core reads, spacings, batches, masks, model folders,
evaluate folders, dataset store files) are declared in ``attack_cases.py``; each is run through
``MedianNerveSegLib.cli.main`` in-process and must end as a clear error (exit 1/2, a stderr line
naming the file or option, no traceback) or a correct result (the numbers checked).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from attack_cases import CLEAR, CORRECT, all_cases, run_case  # noqa: E402

CASES = all_cases()

# Known open defects, each a strict xfail with its reason: a case that starts passing must leave this list.
OPEN_DEFECTS: dict = {}


def test_the_attack_has_at_least_100_cases_in_every_group():
    groups = {case.group for case in CASES}
    assert len(CASES) >= 100
    assert groups == {"image", "spacing", "batch", "measure", "model", "evaluate", "store", "report"}


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.xfail(reason=OPEN_DEFECTS[case.name], strict=True))
                                  if case.name in OPEN_DEFECTS else case for case in CASES],
                         ids=[case.name for case in CASES])
def test_attack_case(case, tmp_path):
    verdict = run_case(case, tmp_path)
    assert verdict.outcome in (CLEAR, CORRECT), f"{case.name} (expected {case.expect}): {verdict.outcome}: {verdict.line}"
