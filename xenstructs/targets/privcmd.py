"""Xen's M2P in a running PV dom0, mapped read-only through the privcmd device (as libxc's ``xc_map_m2p``).

The M2P (mfn -> pfn of every domain) is no /proc/kcore segment. Xen tells a privileged domain the
machine frames of its 2 MiB M2P chunks (``XENMEM_machphys_mfn_list``) and lets it map them from
``DOMID_XEN``; the mapping is made ``PROT_READ`` (a read-only mapping in this process: nothing of
Xen's or any domain's memory is written), copied, and unmapped. ``XENMEM_maximum_ram_page`` gives
``max_page``. Layouts: Linux ``include/uapi/xen/privcmd.h``, Xen ``public/memory.h``.
"""

import ctypes
import mmap
import os

import numpy as np

from ..errors import XenscopeError

DEVICES = ("/dev/xen/privcmd", "/proc/xen/privcmd")
HYPERVISOR_MEMORY_OP = 12
XENMEM_MAXIMUM_RAM_PAGE, XENMEM_MACHPHYS_MFN_LIST = 2, 5
DOMID_XEN = 0x7FF2
CHUNK_FRAMES = 512                     # one M2P extent: 2 MiB
IOCTL_HYPERCALL = (48 << 16) | (ord("P") << 8) | 0          # _IOC(_IOC_NONE, 'P', 0, 48)
IOCTL_MMAPBATCH_V2 = (32 << 16) | (ord("P") << 8) | 4       # _IOC(_IOC_NONE, 'P', 4, 32)
MAX_EXTENTS = 1 << 16


class Hypercall(ctypes.Structure):
    _fields_ = [("op", ctypes.c_uint64), ("arg", ctypes.c_uint64 * 5)]


class MfnList(ctypes.Structure):
    _fields_ = [("max_extents", ctypes.c_uint32), ("extent_start", ctypes.c_uint64),
                ("nr_extents", ctypes.c_uint32)]


class MmapBatch(ctypes.Structure):
    _fields_ = [("num", ctypes.c_uint32), ("dom", ctypes.c_uint16), ("addr", ctypes.c_uint64),
                ("arr", ctypes.c_uint64), ("err", ctypes.c_uint64)]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    return libc


def _ioctl(libc, fd, request, arg, what):
    ret = libc.ioctl(fd, request, ctypes.byref(arg))
    if ret < 0:
        err = ctypes.get_errno()
        raise XenscopeError(f"privcmd {what}: {os.strerror(err)}")
    return ret


def _memory_op(libc, fd, cmd, arg=None):
    call = Hypercall(HYPERVISOR_MEMORY_OP)
    call.arg[0] = cmd
    call.arg[1] = ctypes.addressof(arg) if arg is not None else 0
    return _ioctl(libc, fd, IOCTL_HYPERCALL, call, f"memory_op {cmd}")


def read_m2p():
    """``(m2p uint64 array indexed by mfn, max_page, device)``, mapped read-only and copied.

    :raises XenscopeError: no privcmd device (not on Xen, or xen-privcmd not loaded), not privileged,
        or Xen refused a step (the message says which)
    """
    device = next((d for d in DEVICES if os.path.exists(d)), None)
    if device is None:
        raise XenscopeError(f"no privcmd device ({' or '.join(DEVICES)}: load xen-privcmd, mount xenfs)")
    libc = _libc()
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise XenscopeError(f"cannot open {device}: {e.strerror}") from None
    try:
        max_page = _memory_op(libc, fd, XENMEM_MAXIMUM_RAM_PAGE)
        extents = (ctypes.c_uint64 * MAX_EXTENTS)()
        arg = MfnList(MAX_EXTENTS, ctypes.addressof(extents), 0)
        _memory_op(libc, fd, XENMEM_MACHPHYS_MFN_LIST, arg)
        chunks = [int(extents[i]) for i in range(arg.nr_extents)]
        needed = min(len(chunks), -(-max_page // (CHUNK_FRAMES * 512)))      # 512 entries per frame
        m2p = _map_chunks(libc, fd, chunks[:needed])
    finally:
        os.close(fd)
    return m2p[:max_page], max_page, device


def _map_chunks(libc, fd, chunks):
    frames = len(chunks) * CHUNK_FRAMES
    size = frames * mmap.PAGESIZE
    addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise XenscopeError(f"privcmd mmap: {os.strerror(ctypes.get_errno())}")
    try:
        mfns = (ctypes.c_uint64 * frames)(*[c + i for c in chunks for i in range(CHUNK_FRAMES)])
        errs = (ctypes.c_int * frames)()
        batch = MmapBatch(frames, DOMID_XEN, addr, ctypes.addressof(mfns), ctypes.addressof(errs))
        _ioctl(libc, fd, IOCTL_MMAPBATCH_V2, batch, "mmapbatch of Xen's M2P frames")
        bad = [i for i in range(frames) if errs[i]]
        if bad:
            raise XenscopeError(f"Xen refused {len(bad)} M2P frame(s) (first: error {errs[bad[0]]})")
        return np.ctypeslib.as_array((ctypes.c_uint64 * (size // 8)).from_address(addr)).copy()
    finally:
        libc.munmap(addr, size)
