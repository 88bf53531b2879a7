#!/usr/bin/env python3
"""Supply-chain check, offline: Cargo.lock against a copy of the RustSec advisory database,
every dependency's license against an allowed list, and no crate in more versions than the
allowed duplicates.

    scripts/audit.py                       # the advisory copy in ../shared/advisory-db
    scripts/audit.py --db PATH             # another copy (a checkout of rustsec/advisory-db)

Exit 0 when clean; 1 with each finding named (crate, version, advisory, what fixes it).
Informational advisories (unmaintained, unsound, notices) are printed as warnings.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Licenses every dependency may carry (SPDX ids); an `OR` needs one of them, an `AND` all.
ALLOWED_LICENSES = {
    "MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause", "BSD-3-Clause",
    "ISC", "Zlib", "Unicode-3.0", "Unicode-DFS-2016", "CC0-1.0", "MPL-2.0", "BSL-1.0", "0BSD",
    "CDLA-Permissive-2.0", "Unlicense", "MIT-0",
}


def parse_version(v):
    core, _, pre = v.partition("-")
    core = core.split("+")[0]
    parts = [int(x) for x in core.split(".")]
    while len(parts) < 3:
        parts.append(0)
    # A pre-release sorts before its release.
    return (parts[0], parts[1], parts[2], 0 if pre else 1, pre)


def matches_one(version, req):
    """Whether `version` meets one comparator: `>= 1.2.3`, `< 2`, `^0.8.5`, `~1.2`, `= 1.0.0`."""
    req = req.strip()
    m = re.match(r"^(>=|<=|>|<|=|\^|~)?\s*([0-9][0-9A-Za-z.\-+]*)$", req)
    if not m:
        raise ValueError(f"unreadable version requirement {req!r}")
    op, bound = m.group(1) or "^", m.group(2)
    v, b = parse_version(version), parse_version(bound)
    nparts = len(bound.split("-")[0].split("."))
    if op == ">=":
        return v >= b
    if op == ">":
        return v > b
    if op == "<=":
        return v <= b
    if op == "<":
        return v < b
    if op == "=":
        return v[:3] == b[:3] and v[4] == b[4]
    if op == "~":
        upper = (b[0], b[1] + 1, 0) if nparts >= 2 else (b[0] + 1, 0, 0)
        return v >= b and v[:3] < upper
    # Caret: the leftmost non-zero part may not change.
    if b[0] > 0 or nparts == 1:
        upper = (b[0] + 1, 0, 0)
    elif b[1] > 0 or nparts == 2:
        upper = (0, b[1] + 1, 0)
    else:
        upper = (0, 0, b[2] + 1)
    return v >= b and v[:3] < upper


def matches(version, requirement):
    return all(matches_one(version, r) for r in requirement.split(","))


def advisories(db):
    crates = os.path.join(db, "crates")
    for name in sorted(os.listdir(crates)):
        folder = os.path.join(crates, name)
        for f in sorted(os.listdir(folder)):
            if not f.endswith(".md"):
                continue
            text = open(os.path.join(folder, f), encoding="utf-8").read()
            m = re.search(r"```toml\n(.*?)\n```", text, re.S)
            if not m:
                continue
            yield tomllib.loads(m.group(1)), text


def host():
    """The target this machine builds for (what the licenses are checked for)."""
    out = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout
    return next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("host: "))


def license_ok(expr):
    expr = (expr or "").replace("/", " OR ")
    if not expr.strip():
        return False
    alternatives = [a.strip(" ()") for a in re.split(r"\bOR\b", expr)]
    for alt in alternatives:
        terms = [t.strip(" ()") for t in re.split(r"\bAND\b", alt)]
        if all(t in ALLOWED_LICENSES for t in terms):
            return True
    return False


def self_check():
    """The matcher against cases whose answers are known, so that a clean report means something."""
    cases = [
        ("0.9.0", ">= 0.9.1", False), ("0.9.1", ">= 0.9.1", True), ("1.2.3", "^1.2", True),
        ("2.0.0", "^1.2", False), ("0.8.9", "^0.8.5", True), ("0.9.0", "^0.8.5", False),
        ("0.0.4", "^0.0.3", False), ("1.2.9", "~1.2.3", True), ("1.3.0", "~1.2.3", False),
        ("1.4.0", ">= 1.2, < 1.5", True), ("1.5.0", ">= 1.2, < 1.5", False),
        ("1.0.0-rc.1", ">= 1.0.0", False), ("0.3.4", "< 0.2", False),
    ]
    for version, req, want in cases:
        assert matches(version, req) == want, (version, req, want)
    assert license_ok("MIT OR Apache-2.0") and license_ok("(MIT OR Apache-2.0) AND Unicode-3.0")
    assert not license_ok("GPL-3.0-only") and not license_ok("MIT AND GPL-3.0-only")


def main():
    self_check()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=os.path.join(ROOT, "..", "shared", "advisory-db"))
    ap.add_argument("--lock", default=os.path.join(ROOT, "Cargo.lock"))
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.db, "crates")):
        print(f"audit: no advisory database at {args.db} (expected its crates/ folder)", file=sys.stderr)
        return 1
    lock = tomllib.load(open(args.lock, "rb"))
    packages = {}
    for p in lock.get("package", []):
        if p.get("source", "").startswith("registry+"):
            packages.setdefault(p["name"], set()).add(p["version"])
    problems, warnings, checked = [], [], 0
    for adv, _text in advisories(args.db):
        a = adv.get("advisory", {})
        name = a.get("package")
        if name not in packages or a.get("withdrawn"):
            continue
        versions = adv.get("versions", {})
        safe = versions.get("patched", []) + versions.get("unaffected", [])
        for v in sorted(packages[name]):
            checked += 1
            if any(matches(v, r) for r in safe):
                continue
            fix = ", ".join(versions.get("patched", [])) or "none: replace the crate"
            line = f"{name} {v}: {a.get('id')} ({a.get('title', a.get('url', ''))}); fixed in {fix}"
            if a.get("informational"):
                warnings.append(f"{line} [{a['informational']}]")
            else:
                problems.append(line)
    snapshot = open(os.path.join(args.db, "SNAPSHOT")).read().strip() if os.path.exists(os.path.join(args.db, "SNAPSHOT")) else args.db
    print(f"audit: {sum(len(v) for v in packages.values())} crates from Cargo.lock against {snapshot}")

    # Licenses, from the crates' manifests (cargo reads them from its registry cache; it may
    # fetch a crate the build never needed).
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", host()],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    for p in meta["packages"]:
        if p.get("source") is None:
            continue
        if not license_ok(p.get("license")):
            problems.append(f"{p['name']} {p['version']}: license {p.get('license')!r} is not on the allowed list")

    # Duplicates: a crate in several versions only where it is known and accepted.
    allowed_file = os.path.join(ROOT, "scripts", "audit-duplicates.txt")
    allowed = set()
    if os.path.exists(allowed_file):
        for line in open(allowed_file):
            line = line.split("#")[0].strip()
            if line:
                allowed.add(line)
    for name, versions in sorted(packages.items()):
        if len(versions) > 1 and name not in allowed:
            problems.append(f"{name}: {len(versions)} versions ({', '.join(sorted(versions))}); one is enough, or add it to scripts/audit-duplicates.txt with why")

    for w in warnings:
        print(f"warning: {w}")
    for p in problems:
        print(f"error: {p}")
    print(f"audit: {len(problems)} problems, {len(warnings)} warnings")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
