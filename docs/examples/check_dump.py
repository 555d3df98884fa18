"""Run every check that applies to a dump (paging, Xen frames, P2M, modcheck, faults, console)."""
from xenstructs.api import CheckOptions, check_dump

report = check_dump("cores/x86_64-4level.core", CheckOptions(siblings=False))
print(f"{report.dump}: {report.kind}, {report.status}")
for check in report.checks:
    print(f"  {check.name:10} {check.status:8} {check.summary[:90]}")
paging = next(check for check in report.checks if check.name == "paging")
for finding in paging.findings:
    print(f"    {finding['text']}")
