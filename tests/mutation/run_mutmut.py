"""Mutation testing with mutmut 3 over the trust core and the on-air pure decisions.

    .venv/bin/python tests/mutation/run_mutmut.py            # full run (README "Long runs"), scores in BENCHMARKS.md
    .venv/bin/python tests/mutation/run_mutmut.py --quick --min-score 0.9   # CI: envelope, commands, verifier, trustdoc
    .venv/bin/python tests/mutation/run_mutmut.py --only node/trust/ack.py --survivors /tmp/s.txt   # one file, diffs

mutmut reads its settings from setup.cfg in the directory it runs in, and the top level of this
repository is fixed, so this script builds a scratch project (default build/mutation/, gitignored) with
copies of node/, provisioning/, tests/ and docs/ and a generated setup.cfg, runs `mutmut run` there and
prints killed/survived per file. Only the pure unit tests of each module are run against its mutants
(tests that start daemons or subprocesses import the unmutated installed code and would only cost time).
Exit status 1 when a file's score is below --min-score.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MUTMUT = Path(sys.executable).with_name("mutmut")

# What is mutated, and the tests that judge it.
# Every pure trust test file (new ones join by their name), and the update tests that verify releases
# through the verifier. Not test_trust_cli.py (subprocesses) nor test_trust_fuzz.py (hypothesis: slow).
TRUST_TESTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_trust_*.py")
                     if p.name not in ("test_trust_cli.py", "test_trust_fuzz.py")) + ["tests/test_update_release.py"]
ONAIR_TESTS = sorted(str(p.relative_to(ROOT)) for name in ("arbiter", "sequencer", "schedule")
                     for p in (ROOT / "tests").glob(f"test_playback_{name}*.py"))
FULL = {
    # cli_verify.py is argument parsing around verify_audio_file, tested through subprocesses.
    "mutate": ["node/trust/*", "node/playback/arbiter.py", "node/playback/sequencer.py", "node/playback/schedule.py"],
    "skip": ["node/trust/cli_verify.py", "node/trust/__init__.py"],
    "tests": TRUST_TESTS + ONAIR_TESTS,
}
# The CI budget: the four files every broker message goes through (2,669 mutants, ≈ 8 min on 2 shared cores).
QUICK = {"mutate": ["node/trust/envelope.py", "node/trust/commands.py", "node/trust/verifier.py",
                    "node/trust/trustdoc.py"], "skip": [], "tests": TRUST_TESTS}


def setup_cfg(plan: dict) -> str:
    def lines(values):
        return "".join(f"\n    {v}" for v in values)

    return ("[mutmut]\nsource_paths=node\n"
            f"only_mutate={lines(plan['mutate'])}\n"
            f"do_not_mutate={lines(plan['skip']) if plan['skip'] else ' node/__nothing__.py'}\n"
            f"also_copy={lines(['provisioning', 'docs'])}\n"
            f"pytest_add_cli_args_test_selection={lines(plan['tests'])}\n"
            f"pytest_add_cli_args={lines(['-p', 'no:cacheprovider', '-q'])}\n")


def prepare(workdir: Path, plan: dict) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutation")
    for name in ("node", "provisioning", "tests", "docs"):
        shutil.copytree(ROOT / name, workdir / name, ignore=ignore)
    (workdir / "setup.cfg").write_text(setup_cfg(plan), encoding="utf-8")


RESULT = re.compile(r"^\s*(?P<module>[\w.]+)\.x(?:ǁ\w+ǁ)?_?\w*__mutmut_\d+: (?P<status>[\w ]+)$")


def scores(workdir: Path) -> dict[str, collections.Counter]:
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=workdir, capture_output=True,
                         text=True, check=True).stdout
    per_file: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if "__mutmut_" not in name:
            continue
        module = name.split(".x", 1)[0] if ".x_" in name else name.split(".xǁ", 1)[0]
        per_file[module.replace(".", "/") + ".py"][status.strip()] += 1
    return per_file


# One process for every diff (`mutmut show` per mutant costs a second each); run in the scratch project,
# where mutmut finds its setup.cfg.
_DIFFS = """
from mutmut.__main__ import SourceFileMutationData, status_by_exit_code, walk_mutatable_files
from mutmut.mutation.diff_apply import get_diff_for_mutant
for path in walk_mutatable_files():
    data = SourceFileMutationData(path=path)
    data.load()
    for name, code in sorted(data.exit_code_by_key.items()):
        status = status_by_exit_code[code]
        if status not in ("killed", "timeout"):
            print(f"# {name}: {status}\\n{get_diff_for_mutant(name, path=data.path)}\\n")
"""


def survivor_diffs(workdir: Path) -> str:
    """The diff of every mutant that no test killed: what to read when writing the next test."""
    return subprocess.run([sys.executable, "-c", _DIFFS], cwd=workdir, capture_output=True, text=True,
                          check=True).stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CI budget (one module)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--min-score", type=float, default=0.0, help="fail below this killed share (0-1)")
    parser.add_argument("--json", type=Path, help="write the per-file counts here")
    parser.add_argument("--only", nargs="+", metavar="PATH",
                        help="mutate only these files (globs as in setup.cfg), judged by the plan's tests")
    parser.add_argument("--survivors", type=Path, help="write the diff of every surviving mutant here")
    args = parser.parse_args(argv)
    plan = dict(QUICK if args.quick else FULL)
    if args.only:
        plan = {**plan, "mutate": args.only}
    prepare(args.workdir, plan)
    run = subprocess.run([str(MUTMUT), "run", "--max-children", str(args.max_children)], cwd=args.workdir,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        print(run.stderr[-3000:], file=sys.stderr)
        return 2
    per_file = scores(args.workdir)
    worst = 1.0
    print(f"{'file':<34} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'timeout':>7} {'score':>6}")
    for path, counts in sorted(per_file.items()):
        total = sum(counts.values())
        killed = counts["killed"] + counts["timeout"]
        score = killed / total if total else 1.0
        worst = min(worst, score)
        print(f"{path:<34} {total:>7} {counts['killed']:>7} {counts['survived']:>8} {counts['no tests']:>8} "
              f"{counts['timeout']:>7} {score:>6.1%}")
    if args.json:
        args.json.write_text(json.dumps({p: dict(c) for p, c in per_file.items()}, indent=1) + "\n")
    if args.survivors:
        args.survivors.write_text(survivor_diffs(args.workdir), encoding="utf-8")
    return 1 if worst < args.min_score else 0


if __name__ == "__main__":
    raise SystemExit(main())
