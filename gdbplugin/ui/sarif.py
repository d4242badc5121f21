"""The SARIF 2.1.0 report, for GitHub/GitLab code scanning: one result per listed finding of
the JSON report (gdbplugin/ui/report.py), ruleId = the hazard kind, level ``error`` when the
active policy leaves it uncovered, ``warning`` when it covers it, ``note`` for the info kinds.
The location is the PC as an absolute address, in the image file whose symbols named it
(physical location), and the function as a logical location."""
from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..model.hazards import DETECTORS, INFO_KINDS

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def sarif(report: dict) -> dict:
    kinds = list(DETECTORS)
    rules = [{"id": k, "name": _camel(k),
              "shortDescription": {"text": DETECTORS[k].meaning.split(":")[0]},
              "fullDescription": {"text": DETECTORS[k].meaning},
              "defaultConfiguration": {"level": "note" if k in INFO_KINDS else "error"},
              "properties": {"responsibility": DETECTORS[k].whose,
                             "seedPoint": DETECTORS[k].seed}}
             for k in kinds]
    results = [_result(f, kinds.index(f["kind"])) for f in report["findings"]]
    run = report.get("run") or {}
    invocation = {"executionSuccessful": run.get("ended", "marker") in ("marker", None),
                  "exitCode": report["verdict"]["exit"]}
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION,
            "runs": [{"tool": {"driver": {"name": "s2cache", "version": __version__,
                                          "rules": rules}},
                      "invocations": [invocation],
                      "properties": {"policy": report["policy"]},
                      "results": results}]}


def _result(f: dict, rule_index: int) -> dict:
    if f["kind"] in INFO_KINDS:
        level = "note"
    else:
        level = "warning" if f["covered"] else "error"
    out = {"ruleId": f["kind"], "ruleIndex": rule_index, "level": level,
           "message": {"text": f["message"] or f["kind"]},
           "properties": {k: f[k] for k in ("seq", "vcpu", "el", "sctlr", "ipa", "pa", "size",
                                            "covered", "covered_by", "observed",
                                            "responsibility")}}
    if f["pc"] is not None:
        physical = {"address": {"absoluteAddress": f["pc"]}}
        if f.get("image"):
            physical["artifactLocation"] = {"uri": Path(f["image"]).resolve().as_uri()}
        location = {"physicalLocation": physical}
        if f.get("symbol"):
            location["logicalLocations"] = [{"name": f["symbol"].split("+")[0],
                                             "fullyQualifiedName": f["symbol"],
                                             "kind": "function"}]
        out["locations"] = [location]
    return out


def _camel(kind: str) -> str:
    return "".join(p.capitalize() for p in kind.split("-"))
