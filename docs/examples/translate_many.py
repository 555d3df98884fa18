"""Translate many addresses at once (numpy arrays in, numpy arrays out): each element answers as
walk() would, millions per second."""
import numpy as np

from xenstructs.api import open_dump, resolve, translate_many

target = open_dump("cores/x86_64-4level.core")
paging = resolve(target).paging
addresses = np.concatenate([np.arange(0x3FF000, 0x603000, 0x800, dtype=np.uint64),
                            np.arange(0xFFFF888000000000, 0xFFFF888000400000, 0x40000, dtype=np.uint64),
                            np.array([0x7F0000123456, 0x200012345678, 0x800000000000], np.uint64)])
translations = translate_many(target, paging, addresses)
print(f"{int(translations.ok.sum())} of {len(translations)} addresses translate")
for i in np.flatnonzero(translations.ok)[:4].tolist():
    size = int(translations.page_size[i])
    print(f"  {int(translations.va[i]):#x} -> {int(translations.pa[i]):#x} ({size >> 10} KiB)")
for i in np.flatnonzero(~translations.ok)[:3].tolist():
    print(f"  {int(translations.va[i]):#x}: {translations.stop_name(i)} at {translations.stop_level_name(i)}")
