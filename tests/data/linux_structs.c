#include <stddef.h>
#include <stdio.h>
struct list_head { struct list_head *next, *prev; };
struct rb_node { unsigned long __rb_parent_color; struct rb_node *rb_right, *rb_left; };
struct mm_struct { struct { int map_count; void *mmap; unsigned long pgd_pad[3]; unsigned long *pgd; } ; int x; };
struct task_struct { long state; void *stack; struct { int a; struct list_head tasks; int prio; }; int pid; int tgid;
  struct mm_struct *mm, *active_mm; char comm[16]; };
#if MODVAR == 2
enum { MOD_TEXT, MOD_DATA, MOD_RODATA, MOD_RO_AFTER_INIT, MOD_INIT_TEXT, MOD_INIT_DATA, MOD_INIT_RODATA, MOD_MEM_NUM_TYPES };
struct module_memory { void *base; unsigned int size; void *mtn; };
struct module { int state; struct list_head list; char name[64 - sizeof(unsigned long)]; void *syms; struct module_memory mem[MOD_MEM_NUM_TYPES]; };
#elif MODVAR == 1
struct module_layout { void *base; unsigned int size; unsigned int text_size; };
struct module { int state; struct list_head list; char name[64 - sizeof(unsigned long)]; struct module_layout core_layout, init_layout; };
#else
struct module { int state; struct list_head list; char name[64 - sizeof(unsigned long)]; void *module_init, *module_core; unsigned int init_size, core_size; };
#endif
struct vmap_area { unsigned long va_start, va_end; struct rb_node rb_node; struct list_head list; void *vm; };
struct task_struct init_task; struct mm_struct init_mm; struct list_head modules; struct list_head vmap_area_list;
unsigned long swapper_pg_dir[1024]; struct module __this_module; struct vmap_area vmap_area0;
const char linux_banner[] = "Linux version 6.4.0-gcctest (t@t) #1 SMP\n";
#define O(s, m) printf(#s "." #m " %zu\n", offsetof(struct s, m))
int main(void) {
  O(task_struct, tasks); O(task_struct, pid); O(task_struct, tgid); O(task_struct, comm); O(task_struct, mm); O(task_struct, active_mm);
  O(mm_struct, pgd); O(module, list); O(module, name); O(module, state);
#if MODVAR == 2
  O(module, mem); O(module_memory, base); O(module_memory, size);
#elif MODVAR == 1
  O(module, core_layout); O(module, init_layout); O(module_layout, base); O(module_layout, size);
#else
  O(module, module_core); O(module, core_size); O(module, module_init); O(module, init_size);
#endif
  O(vmap_area, va_start); O(vmap_area, va_end); O(vmap_area, list); O(vmap_area, rb_node); O(vmap_area, vm);
  return 0; }
