// Per-thread set-up for threaded wasm-cpu libraries (see ../threads.py), done in C.
//
// emscripten's threaded libc (the -mt archives) expects its JavaScript to have initialised
// each thread: the thread pointer (a struct pthread: errno, locale, mutex owner ids), whether
// the thread may block, and a TLS block. tvmjs loads standalone modules with no such glue, so
// the owner's start-up hook and the helpers' set-up live here; the module then imports nothing
// new but its memory. Built with musl's internal headers for struct pthread.
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>

#include "pthread_impl.h"

void __set_thread_state(pthread_t ptr, int is_main, int is_runtime, int can_block);
void __wasm_init_tls(void* memory);  // made by wasm-ld: copies the TLS image into `memory`
void webkiln_thread_main(int32_t index);

// One helper's start-up data, made by the owner (webkiln_threads_prepare) and handed to the
// helper's webkiln_thread_entry. stack_top comes first: thread_entry.s reads it at offset 0.
typedef struct {
  void* stack_top;
  void* tls;
  struct pthread* self;
  int32_t index;
  void* stack_base;
} webkiln_thread;

// Called by libc's constructor on the owner (emscripten's JavaScript defines it otherwise).
// The owner may not block until it says so: a browser's main thread never may.
void __emscripten_init_main_thread_js(void* tb) { __set_thread_state((pthread_t)tb, 0, 1, 0); }

// libc asks before blocking on a mutex or condition: blocking is always allowed where it runs.
void emscripten_check_blocking_allowed(void) {}

// Only reached after another thread crashed (libc's futex wait): no way back to JavaScript here.
void emscripten_unwind_to_js_event_loop(void) { __builtin_trap(); }

__attribute__((export_name("webkiln_threads_main_can_block"))) void webkiln_threads_main_can_block(int32_t can_block) {
  __set_thread_state(pthread_self(), 0, 1, can_block);
}

// Allocated by the owner (malloc is not yet usable on a helper without its thread pointer).
__attribute__((export_name("webkiln_threads_prepare")))
webkiln_thread* webkiln_threads_prepare(int32_t index, int32_t stack_size) {
  webkiln_thread* t = calloc(1, sizeof *t);
  struct pthread* self = calloc(1, sizeof *self);
  void** tsd = calloc(PTHREAD_KEYS_MAX, sizeof(void*));  // its own pthread_getspecific values
  if (!t || !self || !tsd) return 0;
  t->stack_base = aligned_alloc(16, (size_t)stack_size);
  if (!t->stack_base) return 0;
  t->stack_top = (char*)t->stack_base + stack_size;
  size_t tls_size = __builtin_wasm_tls_size();
  size_t tls_align = __builtin_wasm_tls_align() < 16 ? 16 : __builtin_wasm_tls_align();
  t->tls = tls_size ? aligned_alloc(tls_align, (tls_size + tls_align - 1) & ~(tls_align - 1)) : 0;
  struct pthread* owner = pthread_self();
  // As libc's own start-up fills in the main thread's record.
  self->self = self;
  self->tid = owner->tid + index;
  self->locale = owner->locale;
  self->stack = t->stack_top;
  self->stack_size = (size_t)stack_size;
  self->detach_state = DT_JOINABLE;
  self->robust_list.head = &self->robust_list.head;
  self->tsd = tsd;
  t->self = self;
  t->index = index;
  return t;
}

// The helper's first C code (thread_entry.s has switched the stack): TLS, thread state, loop.
void webkiln_thread_run(webkiln_thread* t) {
  if (t->tls) __wasm_init_tls(t->tls);
  __set_thread_state(t->self, 0, 0, 1);
  webkiln_thread_main(t->index);
}
