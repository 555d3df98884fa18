"""Check every PV domain's P2M against Xen's M2P and the frames' owners."""
from xenstructs.api import open_dump, p2m_check

report = p2m_check(open_dump("cores/xen-4.17-host.core"), xen_syms="cores/xen-4.17-host.map")
for domain in report["domains"]:
    print(f"d{domain['domain']}: {domain['pfns']} pfns, {domain['problems']} problem(s)")
    for kind, findings in domain["findings"].items():
        for f in findings[:2]:
            mfn = "-" if f["mfn"] is None else f"{f['mfn']:#x}"
            print(f"    {kind}: pfn {f['pfn']:#x} -> mfn {mfn}")
