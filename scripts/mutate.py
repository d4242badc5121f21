"""mutate: mutation testing of the core modules against the unit tests, with mutmut 3.

usage: scripts/mutate [MODULE ...] [--minutes N] [--workers N]

MODULE is a .py file or a directory under gdbplugin/, as a path or a dotted name. The default
is every module of gdbplugin/model/, gdbplugin/arch/memtype.py, gdbplugin/arch/walker.py and
gdbplugin/capture/shim_trace.py (and gdbplugin/capture/record.py when it exists).

Each module is measured on its own, in a fresh work tree build/mutate/work/<module>/: a copy
of gdbplugin/ and tests/ and a setup.cfg telling mutmut to mutate only that module and to run
only the unit tests relevant to it (never tests/integration). mutmut makes its mutants/ copy
there and runs one worker (``--workers``: more, for a machine that has nothing else to do:
timing-sensitive tests are not among the unit tests). A module gets N minutes of wall time
(default 3), mutant generation and the clean test run included; when they run out mutmut is
stopped and what it finished is reported as partial. Hypothesis runs derandomized (a profile in the work tree's
conftest.py) so that verdicts repeat, tests run cheapest first so that a kill comes early, and
the walker fuzz test walks S2CACHE_FUZZ_IMAGES=200 images and the trace reader's fuzz test
reads S2CACHE_FUZZ_TRACES=600 mutated traces unless the variables are set.

mutmut 3 mutates the bodies of functions and methods only: module-level tables and constants
are never mutated. For each mutant it runs only the selected tests that called the mutated
function while they ran; a call made when a test module is imported (a module-level
constant such as WB = from_mair(...)) counts for no test, so such a constant cannot kill it.

Prints a summary table; writes build/mutate/<module>.txt (the counts, then every surviving
mutant as file:line with its diff) and build/mutate/<module>.log (mutmut's own output). The
work tree stays, for `mutmut show NAME` / `mutmut browse` run inside it. Exit status: 0
whatever the scores (a measuring tool, not a gate), 1 if mutmut itself failed (e.g. the
selected tests fail without any mutation), 2 on bad usage.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "mutate"
UNIT = "tests/unit"
DEFAULT_MINUTES = 3.0
FUZZ_IMAGES = "200"
FUZZ_TRACES = "600"           # the trace reader's fuzz test: 12,000 mutated traces otherwise

# The unit tests that exercise a module, by path prefix (first match wins), to which the unit
# test files that import the module are added. mutmut runs, for each mutant, only those of
# them that reach the mutated function.
TESTS = [
    # test_engine_rules.py: the detectors (hazards.py) and the policies act through the
    # engine, and its rule tests are where each one's edge is pinned
    ("gdbplugin/model/", ["test_scenarios.py", "test_model_properties.py", "test_trace.py",
                          "test_replay_cli.py", "test_fidelity.py", "test_engine_rules.py"]),
    ("gdbplugin/arch/walker.py", ["test_walker_roundtrip.py", "test_walker_malformed.py",
                                  "test_arch_registers.py"]),
    ("gdbplugin/arch/memtype.py", ["test_arch_registers.py", "test_walker_roundtrip.py",
                                   "test_walker_malformed.py"]),
]

CONFTEST = '''\
# Written by scripts/mutate. Hypothesis derandomized and without its example database, so that
# a mutant's verdict does not depend on the examples one run happened to draw; and the tests
# ordered cheapest first by mutmut's own timings (mutants/mutmut-stats.json, cwd is mutants/),
# so that under pytest -x a killed mutant is found as early as possible.
import json
from pathlib import Path

from hypothesis import settings

settings.register_profile("s2cache-mutate", derandomize=True, database=None, print_blob=False)
settings.load_profile("s2cache-mutate")


def pytest_collection_modifyitems(items):
    try:
        seconds = json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return
    items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))
'''

# mutmut's exit-code classes, folded into the columns of the report.
COLUMNS = {"killed": "killed", "survived": "survived", "no tests": "no tests",
           "timeout": "timeouts", "not checked": "not checked"}


class Usage(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise Usage(message)


def positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text!r}")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return int(text)


def default_modules() -> list[str]:
    mods = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "gdbplugin/model").glob("*.py"))
    mods += ["gdbplugin/arch/memtype.py", "gdbplugin/arch/walker.py",
             "gdbplugin/capture/shim_trace.py"]
    if (ROOT / "gdbplugin/capture/record.py").is_file():
        mods.append("gdbplugin/capture/record.py")
    return mods


def resolve(arg: str) -> list[str]:
    """A module argument -> repo-relative .py paths under gdbplugin/."""
    cands = [Path(arg), ROOT / arg]
    if re.fullmatch(r"[A-Za-z_][\w.]*", arg) and not arg.endswith(".py"):
        dotted = ROOT / arg.replace(".", "/")
        cands += [dotted.with_name(dotted.name + ".py"), dotted]
    pkg = (ROOT / "gdbplugin").resolve()
    for c in cands:
        c = c.resolve()
        if c != pkg and pkg not in c.parents:
            continue
        if c.is_file() and c.suffix == ".py":
            return [c.relative_to(ROOT.resolve()).as_posix()]
        if c.is_dir():
            found = sorted(p.relative_to(ROOT.resolve()).as_posix() for p in c.rglob("*.py")
                           if "__pycache__" not in p.parts)
            if found:
                return found
    raise Usage(f"not a Python module or package under gdbplugin/: {arg}")


def select_tests(module: str) -> list[str]:
    """The unit test files of TESTS for the module, then any other that imports it by name;
    all of tests/unit when there is neither."""
    chosen = []
    for prefix, files in TESTS:
        if module == prefix or (prefix.endswith("/") and module.startswith(prefix)):
            chosen = [f"{UNIT}/{f}" for f in files if (ROOT / UNIT / f).is_file()]
            break
    dotted = module[:-3].replace("/", ".")
    pkg, _, stem = dotted.rpartition(".")
    pattern = re.compile(rf"{re.escape(dotted)}\b|from {re.escape(pkg)} import .*\b{stem}\b")
    chosen += [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / UNIT).glob("test_*.py"))
               if pattern.search(p.read_text(errors="replace"))
               and p.relative_to(ROOT).as_posix() not in chosen]
    return chosen or [UNIT]


def functions(source: str) -> dict[tuple[str, str | None], ast.AST]:
    """(function, class or None) -> def node: what mutmut mutates (functions and methods)."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[(node.name, None)] = node
        elif isinstance(node, ast.ClassDef):
            for n in node.body:
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[(n.name, node.name)] = n
    return found


def ini_value(value) -> str:
    if isinstance(value, list):
        return "".join(f"\n    {v}" for v in value)
    return str(value)


def make_work_tree(module: str, tests: list[str]) -> Path:
    work = OUT / "work" / module[:-3].replace("/", ".")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    shutil.copytree(ROOT / "gdbplugin", work / "gdbplugin", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    (work / "conftest.py").write_text(CONFTEST)
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get(
        "pytest", {}).get("ini_options", {})
    lines = ["# Written by scripts/mutate for one module; regenerated on every run.",
             "[mutmut]",
             "source_paths = gdbplugin",
             f"only_mutate = {module}",
             "pytest_add_cli_args_test_selection =" + ini_value(tests),
             "also_copy = conftest.py",
             "use_git_change_detection = false",
             "",
             "[tool:pytest]"]
    lines += [f"{k} = {ini_value(v)}" for k, v in pytest_ini.items() if k != "testpaths"]
    (work / "setup.cfg").write_text("\n".join(lines) + "\n")
    return work


def read_meta(meta: Path) -> dict | None:
    try:
        return json.loads(meta.read_text())["exit_code_by_key"]
    except (OSError, ValueError, KeyError):
        return None


@dataclass
class Result:
    module: str
    tests: list[str]
    minutes: float
    workers: int = 1
    seconds: float = 0.0
    codes: dict = field(default_factory=dict)
    status: str = "complete"
    note: str = ""
    failed: bool = False
    counts: dict = field(default_factory=dict)
    report: Path | None = None

    @property
    def slug(self) -> str:
        return self.module[:-3].replace("/", ".")


def run_mutmut(res: Result, env: dict) -> None:
    work = make_work_tree(res.module, res.tests)
    log_path = OUT / f"{res.slug}.log"
    meta = work / "mutants" / (res.module + ".meta")
    cmd = [sys.executable, "-c",
           "import sys; from mutmut.__main__ import cli; sys.argv[0] = 'mutmut'; cli()",
           "run", "--max-children", str(res.workers)]
    start = time.monotonic()
    deadline = start + res.minutes * 60
    last_good, stopped = None, False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                try:
                    rc = proc.wait(timeout=2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                codes = read_meta(meta)     # mutmut rewrites it after every verdict
                if codes is not None:
                    last_good = codes
                if time.monotonic() >= deadline:
                    stopped = True
                    proc.send_signal(signal.SIGINT)     # mutmut stops its worker and saves
                    try:
                        rc = proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        rc = None
                    break
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)    # its own session: leftovers only
            proc.wait()
    res.seconds = time.monotonic() - start
    codes = read_meta(meta)
    res.codes = codes if codes is not None else (last_good or {})
    text = log_path.read_text(errors="replace")
    if "could not find any test case for any mutant" in text:
        res.codes = {k: 33 for k in res.codes}      # mutmut's "no tests" code
        res.note = "no selected unit test reaches any function of the module"
    elif not stopped and rc != 0:
        res.failed = True
        res.status = "error"
        why = [l.strip() for l in text.replace("\r", "\n").splitlines() if l.strip()]
        res.note = (f"mutmut exited {rc}: {why[-1] if why else 'no output'} "
                    f"(see {log_path.relative_to(ROOT)})")
    if stopped:
        res.status = "partial"


def classify(res: Result) -> None:
    from mutmut.stats import status_by_exit_code
    counts = {c: 0 for c in list(COLUMNS.values()) + ["other"]}
    for code in res.codes.values():
        counts[COLUMNS.get(status_by_exit_code[code], "other")] += 1
    counts["mutants"] = len(res.codes)
    counts["tested"] = counts["mutants"] - counts["not checked"]
    res.counts = counts
    if res.status == "partial":
        res.note = (f"time bound hit: {counts['not checked']} of {counts['mutants']} mutants "
                    "not tested" + (f"; {res.note}" if res.note else ""))


def locate(work: Path, module: str, names: list[str]) -> dict[str, tuple[int, str]]:
    """Each mutant -> (line in the module, unified diff against the module's own lines)."""
    import libcst as cst
    from mutmut.mutation.diff_apply import (read_functions_from_index, read_mutant_function,
                                            read_mutants_module, read_original_function)
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    out = {}
    with contextlib.chdir(work):
        text = Path(module).read_text()
        source, defs = text.split("\n"), functions(text)
        parsed = None
        for name in names:
            try:
                fns = read_functions_from_index(name, module)
                if fns is None:
                    parsed = parsed or read_mutants_module(module)
                    fns = (read_original_function(parsed, name), read_mutant_function(parsed, name))
                orig, mut = (cst.Module([f]).code.strip("\n").split("\n") for f in fns)
                node = defs[orig_function_and_class_names_from_key(name)]
            except Exception as e:          # a name mutmut cannot read back: say so, go on
                out[name] = (0, f"(no diff: {type(e).__name__}: {e})")
                continue
            d = next((i for i, l in enumerate(orig) if re.match(r"\s*(async\s+)?def\s", l)), 0)
            first = node.lineno - d                     # file line of orig[0]
            ops = difflib.SequenceMatcher(None, orig, mut, autojunk=False).get_opcodes()
            changed = next((op for op in ops if op[0] != "equal"), ("equal", 0, 0, 0, 0))
            line = first + changed[1]
            file_orig = source[first - 1:first - 1 + len(orig)]
            if [l.strip() for l in file_orig] == [l.strip() for l in orig]:
                # Rebuild both sides from the module's own lines, so indentation and line
                # numbers are those of the file.
                indent = " " * node.col_offset
                file_mut = []
                for tag, i1, i2, j1, j2 in ops:
                    file_mut += file_orig[i1:i2] if tag == "equal" else [
                        indent + l if l else l for l in mut[j1:j2]]
                a, b, shift = file_orig, file_mut, first - 1
            else:
                a, b, shift = orig, mut, 0
            diff = []
            for l in difflib.unified_diff(a, b, f"a/{module}", f"b/{module}", lineterm=""):
                m = re.match(r"@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@", l)
                if m and shift:
                    l = (f"@@ -{int(m[1]) + shift}{m[2] or ''} "
                         f"+{int(m[3]) + shift}{m[4] or ''} @@")
                diff.append(l)
            out[name] = (line, "\n".join(diff))
    return out


def per_function(res: Result) -> list[str]:
    """The counts function by function, in the order of the module."""
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key
    source = (OUT / "work" / res.slug / res.module).read_text()
    line = {key: node.lineno for key, node in functions(source).items()}
    rows: dict[tuple, dict] = {}
    for name, code in res.codes.items():
        func, cls = orig_function_and_class_names_from_key(name)
        row = rows.setdefault((line.get((func, cls), 0), f"{cls}.{func}" if cls else func),
                              dict.fromkeys(("mutants", "tested", "killed", "survived",
                                             "no tests", "timeouts"), 0))
        col = COLUMNS.get(status_by_exit_code[code], "other")
        row["mutants"] += 1
        row["tested"] += col != "not checked"
        if col in row:
            row[col] += 1
    head = ["function", "line", *next(iter(rows.values()), {}).keys()]
    table = [head] + [[f, str(ln), *map(str, r.values())] for (ln, f), r in sorted(rows.items())]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(row, widths))) for row in table]


def hms(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def percent(res: Result) -> str:
    tested = res.counts.get("tested", 0)
    return f"{100 * res.counts['killed'] / tested:.1f}%" if tested else "-"


def git_state(module: str) -> str:
    def git(*args):
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", module)
    return f"commit {head}" + (", module has uncommitted changes" if dirty else "")


def write_report(res: Result, version: str, fuzz: str) -> Path:
    from mutmut.stats import status_by_exit_code
    work = OUT / "work" / res.slug
    groups = {"survived": [], "no tests": [], "timeout": [], "other": []}
    for name, code in res.codes.items():
        st = status_by_exit_code[code]
        if st in ("killed", "not checked"):
            continue
        groups[st if st in groups else "other"].append((name, st))
    listed = [n for g in groups.values() for n, _ in g]
    where = locate(work, res.module, listed) if listed and (work / "mutants").is_dir() else {}
    c = res.counts
    lines = [
        f"mutmut {version} on {res.module} ({git_state(res.module)})",
        f"tests: {' '.join(res.tests)}",
        f"       (S2CACHE_FUZZ_IMAGES={fuzz}, Hypothesis derandomized, cheapest tests first)",
        f"bound: {res.minutes:g} min, {res.workers} worker(s); ran {hms(res.seconds)}; "
        f"{res.status}"
        + (f": {res.note}" if res.note else ""),
        f"mutants {c.get('mutants', 0)}  tested {c.get('tested', 0)}  killed {c.get('killed', 0)}"
        f"  survived {c.get('survived', 0)}  no tests {c.get('no tests', 0)}"
        f"  timeouts {c.get('timeouts', 0)}  other {c.get('other', 0)}"
        f"  killed {percent(res)} of tested",
        f"(work tree: build/mutate/work/{res.slug}; `mutmut show NAME` inside it shows a mutant)",
    ]
    if res.codes:
        lines += ["", "By function" + (" (mutmut takes the mutants whose tests are cheapest first, "
                                       "so a partial run leans towards those functions)"
                                       if res.status == "partial" else "") + ":"]
        lines += ["  " + l for l in per_function(res)]
    titles = {"survived": "Surviving mutants (the selected tests pass with the mutation)",
              "no tests": "Not reached by any selected test (survive by default)",
              "timeout": "Timed out (counted apart from killed)",
              "other": "Other verdicts (suspicious, segfault, ...)"}
    for key, title in titles.items():
        items = sorted(groups[key], key=lambda x: (where.get(x[0], (0, ""))[0],
                                                   x[0].rpartition("_")[0],
                                                   int(x[0].rpartition("_")[2] or 0)))
        if not items:
            continue
        lines += ["", f"{title}: {len(items)}", "-" * (len(title) + 2 + len(str(len(items))))]
        for name, st in items:
            line, diff = where.get(name, (0, ""))
            lines += ["", f"{res.module}:{line}  {name}" + (f"  [{st}]" if key == "other" else "")]
            lines += [diff] if diff else []
    path = OUT / f"{res.slug}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str]) -> int:
    ap = Parser(prog="scripts/mutate", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter, usage=argparse.SUPPRESS)
    ap.add_argument("modules", nargs="*", metavar="MODULE")
    ap.add_argument("--minutes", type=positive_minutes, default=DEFAULT_MINUTES,
                    help=f"wall-time bound per module (default {DEFAULT_MINUTES:g})")
    ap.add_argument("--workers", type=positive_int, default=1,
                    help="mutants tested at once (default 1)")
    try:
        args = ap.parse_args(argv)
        modules = []
        for arg in args.modules or default_modules():
            modules += [m for m in resolve(arg) if m not in modules]
    except Usage as e:
        print(f"mutate: {e} (usage: scripts/mutate [MODULE ...] [--minutes N] [--workers N])",
              file=sys.stderr)
        return 2

    try:
        from importlib.metadata import version
        mutmut_version = version("mutmut")
    except Exception:
        print("mutate: mutmut is not installed in this environment (pip install -e '.[test]')",
              file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, S2CACHE_SKIP_QEMU="1")
    env.setdefault("S2CACHE_FUZZ_IMAGES", FUZZ_IMAGES)
    env.setdefault("S2CACHE_FUZZ_TRACES", FUZZ_TRACES)
    env.pop("MUTANT_UNDER_TEST", None)

    results = []
    for module in modules:
        res = Result(module, select_tests(module), args.minutes, args.workers)
        results.append(res)
        if not functions((ROOT / module).read_text()):
            res.note = "no functions or methods: nothing for mutmut to mutate"
            res.status = "skipped"
            classify(res)
            continue
        print(f"mutate: {module}: up to {args.minutes:g} min, tests {' '.join(res.tests)}",
              file=sys.stderr, flush=True)
        try:
            run_mutmut(res, env)
        except KeyboardInterrupt:
            print("mutate: interrupted", file=sys.stderr)
            return 130
        classify(res)
        res.report = write_report(res, mutmut_version, env["S2CACHE_FUZZ_IMAGES"])

    head = ("module", "mutants", "tested", "killed", "survived", "no tests", "timeouts",
            "killed %", "time", "status")
    rows = [head]
    for r in results:
        c = r.counts
        rows.append((r.module, *(str(c.get(k, 0)) for k in ("mutants", "tested", "killed",
                                                             "survived", "no tests", "timeouts")),
                     percent(r), hms(r.seconds), r.status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    print(f"mutation testing with mutmut {mutmut_version}, unit tests only, "
          f"{args.minutes:g} min per module")
    for row in rows:
        print("  ".join(cell.ljust(w) if i in (0, len(head) - 1) else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    for r in results:
        if r.note:
            print(f"  {r.module}: {r.note}")
    for r in results:
        if r.report:
            print(f"report: {r.report.relative_to(ROOT)}")
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
