/*
 * minikernel.h: Linux-like kernel types with the real member names xenscope's commands look up.
 *
 * Never run: compiled with -g only so the synthetic cores come with an ELF symbol file with DWARF
 * (cores/mod-*.vmlinux) that gdb loads like a vmlinux. Memory contents are laid out by
 * cores/builder/kernelcores.py at the addresses and offsets gcc chose (read back from offsets.c).
 *
 * Build variants (see cores/builder/kernelcores.py):
 *   i386, 2-level   -m32                      struct module with core_layout/init_layout (4.5-6.3)
 *   i386, PAE       -m32 -DCONFIG_X86_PAE     same, 8-byte pgd_t/pmd_t/pte_t
 *   x86_64          -m64 -DMOD_MEM            struct module with mem[MOD_MEM_NUM_TYPES] (6.4+)
 * Freestanding: no libc headers, our own fixed-width typedefs.
 */
#ifndef MINIKERNEL_H
#define MINIKERNEL_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed int s32;
typedef long long s64;
typedef int pid_t;
typedef unsigned int gfp_t;
typedef _Bool bool;

#define PAGE_SIZE 4096
#define TASK_COMM_LEN 16
#define MODULE_NAME_LEN (64 - sizeof(unsigned long))
#define __page_aligned_bss __attribute__((section(".bss..page_aligned"), aligned(PAGE_SIZE)))

#if defined(__x86_64__)
typedef unsigned long pgdval_t;
typedef unsigned long pmdval_t;
typedef unsigned long pteval_t;
#elif defined(CONFIG_X86_PAE)
typedef u64 pgdval_t;
typedef u64 pmdval_t;
typedef u64 pteval_t;
#else
typedef unsigned long pgdval_t;
typedef unsigned long pmdval_t;
typedef unsigned long pteval_t;
#endif
typedef struct { pgdval_t pgd; } pgd_t;
typedef struct { pmdval_t pmd; } pmd_t;
typedef struct { pteval_t pte; } pte_t;

typedef struct { int counter; } atomic_t;
typedef struct { long counter; } atomic_long_t;
typedef struct { atomic_t refs; } refcount_t;
typedef struct { volatile unsigned int slock; } spinlock_t;

struct list_head {
	struct list_head *next, *prev;
};

struct hlist_node {
	struct hlist_node *next, **pprev;
};

struct rb_node {
	unsigned long __rb_parent_color;
	struct rb_node *rb_right;
	struct rb_node *rb_left;
} __attribute__((aligned(sizeof(long))));

struct rb_root {
	struct rb_node *rb_node;
};

struct latch_tree_node {
	struct rb_node node[2];
};

struct thread_info {
	unsigned long flags;
	unsigned long syscall_work;
	u32 status;
	u32 cpu;
};

struct sched_entity {
	struct load_weight { unsigned long weight; u32 inv_weight; } load;
	struct rb_node run_node;
	struct list_head group_node;
	unsigned int on_rq;
	u64 exec_start;
	u64 sum_exec_runtime;
	u64 vruntime;
	u64 prev_sum_exec_runtime;
	u64 nr_migrations;
};

struct vm_area_struct;

struct mm_struct {
	struct vm_area_struct *mmap;
	struct rb_root mm_rb;
	u64 vmacache_seqnum;
	unsigned long (*get_unmapped_area)(unsigned long addr, unsigned long len,
					   unsigned long pgoff, unsigned long flags);
	unsigned long mmap_base;
	unsigned long mmap_legacy_base;
	unsigned long task_size;
	unsigned long highest_vm_end;
	pgd_t *pgd;
	atomic_t mm_users;
	atomic_t mm_count;
	atomic_long_t pgtables_bytes;
	int map_count;
	spinlock_t page_table_lock;
	struct list_head mmlist;
	unsigned long total_vm, locked_vm, pinned_vm, data_vm, exec_vm, stack_vm;
	unsigned long def_flags;
	unsigned long start_code, end_code, start_data, end_data;
	unsigned long start_brk, brk, start_stack;
	unsigned long arg_start, arg_end, env_start, env_end;
	struct task_struct *owner;
	unsigned long flags;
};

struct task_struct {
	struct thread_info thread_info;
#ifdef MOD_MEM
	unsigned int __state;
#else
	volatile long state;
#endif
	void *stack;
	refcount_t usage;
	unsigned int flags;
	unsigned int ptrace;
	int on_cpu;
	unsigned int wakee_flips;
	unsigned long wakee_flip_decay_ts;
	int recent_used_cpu;
	int wake_cpu;
	int on_rq;
	int prio;
	int static_prio;
	int normal_prio;
	unsigned int rt_priority;
	struct sched_entity se;
	unsigned int policy;
	int nr_cpus_allowed;
	struct list_head tasks;
	struct rb_node pushable_dl_tasks;
	struct mm_struct *mm;
	struct mm_struct *active_mm;
	int exit_state;
	int exit_code;
	int exit_signal;
	int pdeath_signal;
	unsigned long jobctl;
	unsigned int personality;
	unsigned int atomic_flags;
	pid_t pid;
	pid_t tgid;
	unsigned long stack_canary;
	struct task_struct *real_parent;
	struct task_struct *parent;
	struct list_head children;
	struct list_head sibling;
	struct task_struct *group_leader;
	struct list_head ptraced;
	struct list_head ptrace_entry;
	struct list_head thread_group;
	struct list_head thread_node;
	u64 utime;
	u64 stime;
	u64 gtime;
	unsigned long nvcsw;
	unsigned long nivcsw;
	u64 start_time;
	u64 real_start_time;
	unsigned long min_flt;
	unsigned long maj_flt;
	const struct cred *ptracer_cred;
	const struct cred *real_cred;
	const struct cred *cred;
	char comm[TASK_COMM_LEN];
	struct nameidata *nameidata;
	struct fs_struct *fs;
	struct files_struct *files;
	struct signal_struct *signal;
	struct sighand_struct *sighand;
	u64 blocked;
	u64 real_blocked;
};

enum module_state {
	MODULE_STATE_LIVE,
	MODULE_STATE_COMING,
	MODULE_STATE_GOING,
	MODULE_STATE_UNFORMED,
};

struct module;
struct mod_tree_node {
	struct module *mod;
	struct latch_tree_node node;
};

#ifdef MOD_MEM
/* Linux 6.4+: include/linux/module.h */
enum mod_mem_type {
	MOD_TEXT = 0,
	MOD_DATA,
	MOD_RODATA,
	MOD_RO_AFTER_INIT,
	MOD_INIT_TEXT,
	MOD_INIT_DATA,
	MOD_INIT_RODATA,

	MOD_MEM_NUM_TYPES,
	MOD_INVALID = -1,
};

struct module_memory {
	void *base;
	unsigned int size;
	struct mod_tree_node mtn;
};
#else
/* Linux 4.5-6.3 */
struct module_layout {
	void *base;
	unsigned int size;
	unsigned int text_size;
	unsigned int ro_size;
	unsigned int ro_after_init_size;
	struct mod_tree_node mtn;
};
#endif

struct kernel_symbol;
struct module_kobject {
	void *kobj[8];
	struct module *mod;
	void *drivers_dir;
	void *mp;
	void *kobj_completion;
};

struct module {
	enum module_state state;
	struct list_head list;
	char name[MODULE_NAME_LEN];
	struct module_kobject mkobj;
	void *modinfo_attrs;
	const char *version;
	const char *srcversion;
	void *holders_dir;
	const struct kernel_symbol *syms;
	const s32 *crcs;
	unsigned int num_syms;
	void *kp;
	unsigned int num_kp;
	unsigned int num_gpl_syms;
	const struct kernel_symbol *gpl_syms;
	const s32 *gpl_crcs;
	bool using_gplonly_symbols;
	bool sig_ok;
	bool async_probe_requested;
	unsigned int num_exentries;
	void *extable;
	int (*init)(void);
#ifdef MOD_MEM
	struct module_memory mem[MOD_MEM_NUM_TYPES] __attribute__((aligned(64)));
#else
	struct module_layout core_layout __attribute__((aligned(64)));
	struct module_layout init_layout;
#endif
	void *arch;
	unsigned long taints;
	unsigned int num_bugs;
	struct list_head bug_list;
	void *bug_table;
	void *kallsyms;
	void *core_kallsyms;
	void *sect_attrs;
	void *notes_attrs;
	char *args;
	void *percpu;
	unsigned int percpu_size;
	struct list_head source_list;
	struct list_head target_list;
	void (*exit)(void);
	atomic_t refcnt;
};

/* mm/vmalloc.c (5.x-6.x layout) */
struct vm_struct;
struct vmap_area {
	unsigned long va_start;
	unsigned long va_end;
	struct rb_node rb_node;
	struct list_head list;
	union {
		unsigned long subtree_max_size;
		struct vm_struct *vm;
	};
	unsigned long flags;
};

#endif
