/* The PVH domU's witness for xenscope's nested walk (tests/realsys/xenpvh.py).
 *
 * Fills one page-aligned page of its .bss (a static, non-PIE binary: a fixed virtual address)
 * with random bytes, puts the marker string at its start, locks it, reads its own
 * /proc/self/pagemap entry for that page (bit 63 present, bits 0-54 the guest frame) and prints
 *     XENSCOPE-MARKER va=<hex> pagemap=<hex> marker=<text>
 * then spins forever, so that the vCPU's saved CR3 is this process's when the domain is paused.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static unsigned char page[4096] __attribute__((aligned(4096)));

int main(int argc, char **argv)
{
    const char *marker = argc > 1 ? argv[1] : "XENSCOPE-PVH-MARKER";
    uint64_t entry = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, page, sizeof(page)) != (ssize_t)sizeof(page))
        return 1;
    close(fd);
    memcpy(page, marker, strlen(marker) + 1);
    mlock(page, sizeof(page));
    fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0 || pread(fd, &entry, 8, (off_t)((uintptr_t)page / 4096) * 8) != 8)
        return 2;
    close(fd);
    printf("XENSCOPE-MARKER va=%lx pagemap=%016llx marker=%s\n", (unsigned long)(uintptr_t)page,
           (unsigned long long)entry, marker);
    fflush(stdout);
    for (;;)
        *(volatile unsigned char *)&page[4095] += 0;
}
