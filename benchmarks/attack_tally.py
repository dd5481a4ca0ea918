"""Run the attack of Testing/Python/attack_cases.py and write its tally as JSON and Markdown.

    python benchmarks/attack_tally.py --out FOLDER [--only GROUP ...]

Writes FOLDER/attack_tally.json (counts and one verdict per case) and FOLDER/attack_tally.md
(the counts, then every case that is not a clear error or a correct result, with its output
line). Run it with PYTHONPATH pointing at another checkout to measure that code instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))

from attack_cases import OUTCOMES, all_cases, run_case, tally  # noqa: E402


def markdown(counts: dict, verdicts) -> str:
    lines = ["| tried | " + " | ".join(OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 1) + "|",
             f"| {counts['tried']} | " + " | ".join(str(counts[k]) for k in OUTCOMES) + " |", ""]
    failing = [v for v in verdicts if not v.ok]
    if failing:
        lines += ["| case | group | expected | outcome | output |", "|---|---|---|---|---|"]
        lines += [f"| {v.name} | {v.group} | {v.expect} | {v.outcome} | {v.line.replace('|', '/')} |" for v in failing]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for attack_tally.json and attack_tally.md")
    parser.add_argument("--only", nargs="*", default=None, help="run only these groups")
    args = parser.parse_args()
    import MedianNerveSegLib

    print(f"attacking {Path(MedianNerveSegLib.__file__).parent}", file=sys.stderr)
    cases = [c for c in all_cases() if not args.only or c.group in args.only]
    verdicts = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, case in enumerate(cases):
            verdict = run_case(case, Path(scratch) / f"case{index:03d}")
            verdicts.append(verdict)
            print(f"{verdict.outcome:>14}  {case.group:<8} {case.name}: {verdict.line}", file=sys.stderr, flush=True)
    counts = tally(verdicts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "attack_tally.json").write_text(json.dumps(
        {"code": str(Path(MedianNerveSegLib.__file__).parent), "tally": counts,
         "cases": [asdict(v) for v in verdicts]}, indent=2) + "\n")
    (out / "attack_tally.md").write_text(markdown(counts, verdicts))
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
