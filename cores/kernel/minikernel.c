/*
 * minikernel.c: the globals of the synthetic kernel behind cores/mod-*.core (see minikernel.h).
 * All runtime state (task list, modules, page tables, vmap areas) is written into the dump by
 * cores/builder/kernelcores.py; here the objects are only declared, zero-initialised, at the
 * addresses the linker script gives them.
 */
#include "minikernel.h"

#if defined(__x86_64__)
#define UTS_RELEASE "6.6.0-xenscope"
#define UTS_MACHINE "x86_64"
#elif defined(CONFIG_X86_PAE)
#define UTS_RELEASE "4.19.0-xenscope-pae"
#define UTS_MACHINE "i686"
#else
#define UTS_RELEASE "4.19.0-xenscope"
#define UTS_MACHINE "i686"
#endif

const char linux_banner[] =
	"Linux version " UTS_RELEASE " (xenscope@synthetic) (gcc) #1 SMP " UTS_MACHINE "\n";

struct task_struct init_task __attribute__((aligned(64)));
struct mm_struct init_mm;
struct list_head modules;
struct list_head vmap_area_list;

#if defined(__x86_64__)
pgd_t init_top_pgt[PAGE_SIZE / sizeof(pgd_t)] __page_aligned_bss;
#else
pgd_t swapper_pg_dir[PAGE_SIZE / sizeof(pgd_t)] __page_aligned_bss;
#endif

/* A little code so the image has a .text; never executed. */
void start_kernel(void)
{
	init_mm.mmap = 0;
}

struct task_struct *current_task(void)
{
	return &init_task;
}
