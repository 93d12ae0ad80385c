"""Judge a pip-audit JSON report against the allow-list (stdlib only; run by deploy/audit.sh).

    python deploy/audit_verdict.py REPORT.json ALLOWLIST.txt

Exit status: 0 nothing outside the allow-list; 1 a vulnerability, or a package that could not be audited, not
allow-listed; 2 a malformed allow-list; 3 no package could be audited at all (no vulnerability data reached).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AllowList:
    vulnerabilities: dict[str, str] = field(default_factory=dict)  # id -> reason
    unauditable: dict[str, str] = field(default_factory=dict)  # package -> reason


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def parse_allow_list(text: str) -> AllowList:
    """Entries ``ID  # reason`` and ``skip:PACKAGE  # reason``; ``ValueError`` for one without a reason."""
    allowed = AllowList()
    for number, line in enumerate(text.splitlines(), 1):
        entry, _, reason = line.partition("#")
        entry, reason = entry.strip(), reason.strip()
        if not entry:
            continue
        if not reason:
            raise ValueError(f"allow-list line {number}: {entry!r} has no reason (write it after '#')")
        if entry.startswith("skip:"):
            allowed.unauditable[_normalise(entry.removeprefix("skip:"))] = reason
        else:
            allowed.vulnerabilities[entry.upper()] = reason
    return allowed


def judge(report: dict, allowed: AllowList) -> tuple[int, list[str]]:
    """(exit status, lines to print) for a pip-audit JSON report."""
    lines: list[str] = []
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    skipped = [d for d in dependencies if "skip_reason" in d]
    findings, waived, used = [], [], set()
    for dependency in audited:
        for vuln in dependency.get("vulns", []):
            ids = [vuln["id"], *vuln.get("aliases", [])]
            match = next((i for i in ids if i.upper() in allowed.vulnerabilities), None)
            row = f"{dependency['name']} {dependency.get('version', '?')}: {' / '.join(ids)}"
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fix released"
            if match:
                used.add(match.upper())
                waived.append(f"  allowed  {row} ({allowed.vulnerabilities[match.upper()]})")
            else:
                findings.append(f"  FINDING  {row} (fixed in: {fixes})")
    unexpected_skips = [d for d in skipped if _normalise(d["name"]) not in allowed.unauditable]
    lines.append(
        f"pip-audit: {len(audited)} packages audited, {len(skipped)} not auditable "
        f"({len(skipped) - len(unexpected_skips)} allow-listed), {len(findings) + len(waived)} vulnerabilities "
        f"({len(waived)} allow-listed)"
    )
    lines += findings + waived
    lines += [f"  UNAUDITED {d['name']}: {d['skip_reason']}" for d in unexpected_skips[:20]]
    if len(unexpected_skips) > 20:
        lines.append(f"  ... and {len(unexpected_skips) - 20} more not auditable")
    stale = sorted(set(allowed.vulnerabilities) - used)
    lines += [f"  note: allow-list entry {entry} matched nothing (remove it?)" for entry in stale]
    if dependencies and not audited:
        lines.append("no package could be audited: the vulnerability data (PyPI's JSON API) was not reachable")
        return 3, lines
    return (1 if findings or unexpected_skips else 0), lines


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        allowed = parse_allow_list(Path(argv[2]).read_text(encoding="utf-8"))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    status, lines = judge(json.loads(Path(argv[1]).read_text(encoding="utf-8")), allowed)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
