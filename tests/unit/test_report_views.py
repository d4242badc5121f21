"""The report views of one result (JSON, Markdown, SARIF 2.1.0, SVG) and the exit rule, on the
seed scenarios: every view tells the same findings, and the exit status follows the verdict."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gdbplugin.cli import main
from gdbplugin.model.hazards import DETECTORS, INFO_KINDS

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
SET_WAY = str(SCENARIOS / "seed3-caches-off-set-way.jsonl")
SARIF_LEVELS = {"none", "note", "warning", "error"}


def views(tmp_path, trace, *extra):
    out = {k: tmp_path / f"r.{k}" for k in ("json", "md", "sarif", "svg")}
    code = main(["replay", trace, *extra, *(a for k, p in out.items() for a in (f"--{k}", str(p)))])
    return code, json.loads(out["json"].read_text()), out


@pytest.mark.parametrize("policy", ["none", "kvm"])
def test_every_view_lists_the_same_findings(tmp_path, policy):
    code, report, out = views(tmp_path, SET_WAY, "--policy", policy)
    kinds = sorted(f["kind"] for f in report["findings"])
    assert "set-way-op" in kinds and "caches-off-after-boot" in kinds
    assert code == report["verdict"]["exit"] == (1 if policy == "none" else 0)
    md = out["md"].read_text()
    assert ("findings (exit 1)" if code else "nothing left uncovered (exit 0)") in md
    hazards = [f for f in report["findings"] if f["kind"] not in INFO_KINDS]
    for f in hazards:
        assert re.search(rf"^\| {f['seq']} \| {f['kind']} \|", md, re.M), f["kind"]
    assert "| 2 | 0 | `0x0` | `0x1005` | mci -> MCI |" in md     # caches on, seq 2
    results = json.loads(out["sarif"].read_text())["runs"][0]["results"]
    assert sorted(r["ruleId"] for r in results) == kinds
    by_kind = {r["ruleId"]: r["level"] for r in results}
    for f in hazards:
        assert by_kind[f["kind"]] == ("warning" if f["covered"] else "error")
    svg = ET.parse(out["svg"]).getroot()
    assert svg.tag.endswith("svg")
    text = "".join(svg.itertext())
    assert "vCPU 0" in text and "set-way-op" in text


def test_sarif_has_the_2_1_0_structure(tmp_path):
    """What SARIF 2.1.0 requires of a log that code scanning ingests: version and schema, a
    run with tool.driver.name, rules with unique ids, every result's ruleId naming the rule at
    its ruleIndex, a level from the enumeration, a message text, and a physical location
    with an address (absoluteAddress a non-negative integer) or an artifact."""
    _, report, out = views(tmp_path, SET_WAY, "--policy", "none")
    log = json.loads(out["sarif"].read_text())
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "s2cache"
    ids = [r["id"] for r in driver["rules"]]
    assert len(ids) == len(set(ids)) and set(ids) == set(DETECTORS)
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] in SARIF_LEVELS
    assert len(run["results"]) == len(report["findings"])
    for r in run["results"]:
        assert driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
        assert r["level"] in SARIF_LEVELS and r["message"]["text"]
        for loc in r.get("locations", []):
            phys = loc["physicalLocation"]
            assert "address" in phys or "artifactLocation" in phys
            assert isinstance(phys["address"]["absoluteAddress"], int)
            assert phys["address"]["absoluteAddress"] >= 0
    located = [r for r in run["results"] if r["ruleId"] == "set-way-op"]
    assert located and located[0]["locations"][0]["physicalLocation"]["address"]


def test_the_guests_own_findings_fail_only_when_strict(tmp_path):
    """Under no maintenance the guest turned its caches off having cleaned only by set/way:
    the set/way op is the hypervisor's to trap (fails the run), the caches-off is the guest's
    own (listed, flagged; fails only with --strict)."""
    code, report, _ = views(tmp_path, SET_WAY, "--policy", "none")
    whose = {f["kind"]: f["responsibility"] for f in report["findings"]}
    assert whose["set-way-op"] == "hypervisor" and whose["caches-off-after-boot"] == "guest"
    assert report["verdict"]["failing"] == 1 and report["verdict"]["guest_own"] == 1
    code, report, _ = views(tmp_path, SET_WAY, "--policy", "none", "--strict")
    assert code == 1 and report["verdict"]["failing"] == 2


def test_compare_gives_the_trade_off_table(tmp_path):
    code, report, out = views(tmp_path, SET_WAY, "--compare")
    rows = {r["policy"]: r for r in report["compare_cost"]}
    assert set(rows) == {"none", "rfc2013", "kvm", "xen", "fwb"}
    assert rows["none"]["uncovered_by_kind"] == {"set-way-op": 1, "caches-off-after-boot": 1}
    assert rows["kvm"]["uncovered"] == 0 and rows["kvm"]["vm_flushes"] >= 1
    assert "## Policy comparison" in out["md"].read_text()


def test_console_tables_fit_a_narrow_terminal_and_never_cut_a_rule_id(tmp_path):
    """A 70-column terminal: every line fits, nothing is cut with an ellipsis, and the rule
    ids are all there (folded over lines, not shortened)."""
    from io import StringIO

    from rich.console import Console

    from gdbplugin.model.engine import Replay
    from gdbplugin.model.trace import read_trace
    from gdbplugin.ui.report import print_compare, print_findings
    t = read_trace(SET_WAY)
    result = Replay(t.header).run(t)
    out = StringIO()
    console = Console(file=out, width=70)
    print_findings(console, result, "none")
    print_compare(console, result)
    text = out.getvalue()
    assert all(len(line) <= 70 for line in text.splitlines())
    assert "…" not in text
    # the folded column holds every character: read top to bottom it is the rule list
    column = _column(text, "coveredby")
    for f in result.findings("none"):
        for rule in f.covered_by:
            assert rule in column, (rule, column)


def _column(table: str, name: str) -> str:
    """The text of one column (header ``name``, spaces dropped) of the first rich box table,
    its cells read top to bottom."""
    lines = table.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("┃"))
    end = next(i for i in range(top, len(lines)) if lines[i].startswith("┡"))
    bars = [i for i, c in enumerate(lines[top]) if c == "┃"]
    for a, b in zip(bars, bars[1:]):
        if "".join(lines[j][a + 1:b] for j in range(top, end)).replace(" ", "") == name:
            body = []
            for line in lines[end + 1:]:
                if line.startswith("└"):
                    break
                body.append(line[a + 1:b].strip())
            return "".join(body)
    raise AssertionError(f"no column {name!r}")


def _svg_text(path) -> list[str]:
    root = ET.parse(path).getroot()
    return [t.strip() for t in root.itertext()                 # the date it was drawn: not
            if t.strip() and not re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+", t.strip())]


def test_the_timeline_helper_process_draws_what_drawing_here_draws(tmp_path):
    """``s2cache run`` starts the timeline's helper process with the guest (matplotlib is
    imported while it boots, and the picture's frame built for the run's vCPUs): its picture has the same text as one drawn in this process, axis labels in
    plain event counts; a path it cannot write is an
    OSError naming why; a helper that died is replaced by drawing here."""
    from gdbplugin.model.trace import read_trace
    from gdbplugin.model.engine import Replay
    from gdbplugin.ui.timeline import Drawer, timeline_svg
    _, report, _ = views(tmp_path, SET_WAY, "--policy", "none")
    result = Replay(read_trace(SET_WAY).header).run(read_trace(SET_WAY))
    here, there = tmp_path / "here.svg", tmp_path / "there.svg"
    timeline_svg(report, result.fault_seqs, 1, str(here))
    Drawer(1).draw(report, result.fault_seqs, 1, str(there))     # on the frame built ahead
    assert _svg_text(there) == _svg_text(here)
    other = tmp_path / "other.svg"
    Drawer(2).draw(report, result.fault_seqs, 1, str(other))     # a frame for 2 lanes: unused
    assert _svg_text(other) == _svg_text(here)
    assert "set-way-op" in _svg_text(there) and "0" in _svg_text(there)
    with pytest.raises(OSError, match="[Nn]o such file"):
        Drawer().draw(report, result.fault_seqs, 1, str(tmp_path / "missing" / "t.svg"))
    dead = Drawer()
    dead._proc.kill()
    dead._proc.wait()
    revived = tmp_path / "revived.svg"
    dead.draw(report, result.fault_seqs, 1, str(revived))
    assert _svg_text(revived) == _svg_text(here)


def test_event_counts_label_the_timeline_axis():
    from gdbplugin.ui.timeline import _events_label
    assert [_events_label(x) for x in (0, 50, 100, 1000, 20000, 300000, 4_000_000)] == \
        ["0", "50", "100", "1k", "20k", "300k", "4M"]
