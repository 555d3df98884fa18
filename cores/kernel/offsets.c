/*
 * offsets.c: not linked into the vmlinux. gcc computes the member offsets and sizes the builder
 * needs (offsetof/sizeof, so they come from the compiler, not from a DWARF reader); they are read
 * back from the ".xoffsets" section of the object file: records of char name[48] + u64 value.
 */
#include "minikernel.h"

#define offsetof(T, m) __builtin_offsetof(T, m)
struct entry { char name[48]; u64 value; };
#define O(T, m) { #T "." #m, offsetof(struct T, m) }
#define S(T) { "sizeof." #T, sizeof(struct T) }

__attribute__((section(".xoffsets"), used)) const struct entry xoffsets[] = {
	O(list_head, next), O(list_head, prev),
	O(task_struct, tasks), O(task_struct, mm), O(task_struct, active_mm), O(task_struct, pid),
	O(task_struct, tgid), O(task_struct, comm), O(task_struct, real_parent),
	O(task_struct, group_leader), O(task_struct, flags),
	O(mm_struct, pgd), O(mm_struct, mm_users), O(mm_struct, mm_count), O(mm_struct, owner),
	O(module, state), O(module, list), O(module, name),
#ifdef MOD_MEM
	O(module, mem), O(module_memory, base), O(module_memory, size), S(module_memory),
#else
	O(module, core_layout), O(module, init_layout), O(module_layout, base),
	O(module_layout, size), O(module_layout, text_size), O(module_layout, ro_size),
	O(module_layout, ro_after_init_size), S(module_layout),
#endif
	O(vmap_area, va_start), O(vmap_area, va_end), O(vmap_area, list),
	S(task_struct), S(mm_struct), S(module), S(vmap_area), S(list_head),
	{ "sizeof.pgd_t", sizeof(pgd_t) }, { "sizeof.pointer", sizeof(void *) },
	{ "MODULE_NAME_LEN", MODULE_NAME_LEN }, { "TASK_COMM_LEN", TASK_COMM_LEN },
};
