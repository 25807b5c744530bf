#!/usr/bin/env python3
"""Reads the results scripts/driver-suites.sh left in a directory and prints, per suite, the
counts per way and, per pgvalet mode, the tests that pass direct but fail through pgvalet.

    scripts/driver-suites-report.py RESULTS_DIR SUITE...

RESULTS_DIR/SUITE-WAY/ holds junit.xml (the pytest suites) or output.txt (node-postgres).
Also writes RESULTS_DIR/SUITE-WAY/outcomes.json ({test: passed|failed|skipped}).
"""

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

WAYS = ("direct", "session", "transaction")


def junit_outcomes(path: Path) -> dict[str, str]:
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            outcome = "failed"
        elif "skipped" in kinds:
            outcome = "skipped"
        else:
            outcome = "passed"
        # A test that passes and then errors in teardown is reported twice: the error wins.
        if outcomes.get(name) != "failed":
            outcomes[name] = outcome
    return outcomes


TIMED_OUT = re.compile(r"^Error: test: (?P<name>.*) did not complete withi?n?t? ?\d+ms$")
TEST_LINE = re.compile(r"^  (?P<name>.*?) (?P<mark>✔|FAILED!|\? - SKIPPED)$")


def node_outcomes(path: Path) -> dict[str, str]:
    """One entry per test the file ran (`file::name`) and one for the file's exit status."""
    outcomes = {}
    current = None
    for line in path.read_text(errors="replace").splitlines():
        # The runner prints the file's name with no newline, so a file that prints nothing
        # else puts its exit marker at the end of that line.
        if "### exit " in line:
            outcomes[current] = "passed" if line.split()[-1] == "0" else "failed"
        elif line.startswith("### "):
            current = line[4:]
        elif m := TIMED_OUT.match(line):
            # The runner's own per-test timeout: the test's name was printed, its mark never.
            if current:
                outcomes[f"{current}::{m['name'].strip()}"] = "failed"
        else:
            # A test's name is printed before it runs and its mark after, so output printed
            # while it runs can fall between them; only the last part counts.
            m = TEST_LINE.match(line) or TEST_LINE.match("  " + line.split("  ")[-1])
            if m and current:
                mark = m["mark"]
                outcome = {"✔": "passed", "FAILED!": "failed"}.get(mark, "skipped")
                outcomes[f"{current}::{m['name'].strip()}"] = outcome
            elif line.endswith("FAILED!") and current:
                outcomes[f"{current}::{line[: -len('FAILED!')].strip()}"] = "failed"
    return outcomes


def load(results: Path, suite: str, way: str) -> dict[str, str] | None:
    run = results / f"{suite}-{way}"
    if (run / "junit.xml").exists():
        outcomes = junit_outcomes(run / "junit.xml")
    elif (run / "output.txt").exists() and suite == "node-postgres":
        outcomes = node_outcomes(run / "output.txt")
    else:
        return None
    (run / "outcomes.json").write_text(json.dumps(outcomes, indent=1, sort_keys=True))
    return outcomes


def main() -> int:
    results = Path(sys.argv[1])
    suites = sys.argv[2:]
    regressions = 0
    for suite in suites:
        runs = {way: load(results, suite, way) for way in WAYS}
        print(f"\n### {suite}\n")
        print("| way | passed | failed | skipped |")
        print("|---|---|---|---|")
        for way, outcomes in runs.items():
            if outcomes is None:
                continue
            values = list(outcomes.values())
            print(f"| {way} | {values.count('passed')} | {values.count('failed')} | {values.count('skipped')} |")
        direct = runs["direct"]
        if direct is None:
            continue
        for mode in ("session", "transaction"):
            outcomes = runs[mode]
            if outcomes is None:
                continue
            worse = sorted(t for t, o in direct.items() if o == "passed" and outcomes.get(t, "missing") not in ("passed",))
            better = sorted(t for t, o in outcomes.items() if o == "passed" and direct.get(t) == "failed")
            regressions += len(worse)
            print(f"\n{suite}, {mode} mode: {len(worse)} pass direct but not through pgvalet")
            for t in worse:
                print(f"  {outcomes.get(t, 'not run')}: {t}")
            if better:
                print(f"  ({len(better)} fail direct but pass through pgvalet: {', '.join(better)})")
    print(f"\n{regressions} test results differ from direct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
