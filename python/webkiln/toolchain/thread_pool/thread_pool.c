// webkiln's TVMBackendParallelLaunch for threaded wasm-cpu libraries (see ../threads.py).
//
// TVM compiles a TIR `parallel` loop into a lambda and a call to TVMBackendParallelLaunch; the
// lambda splits the loop by (task_id, penv->num_task). This launch runs task 0 on the calling
// thread and tasks 1..n-1 on helper threads (Web Workers sharing the memory, started by
// web/src/compiled/threads.ts), and waits for them. With no helper running it calls the
// runtime's serial launch (renamed webkiln_serial_parallel_launch), so the same library works
// single-threaded where the page is not cross-origin isolated.
//
// Protocol, one launch at a time (the VM is single-threaded): the owner writes the job, sets
// `pending` to the number of running helpers and bumps `generation` (the futex word helpers
// wait on). Every running helper acknowledges every generation by decrementing `pending`,
// whether or not it got a task: so the owner cannot publish the next job while a helper may
// still read this one. Waits spin first (gaps between kernels are mostly short), then block.
//
// Tasks are claimed from a counter, not assigned by thread: a helper the OS has not scheduled
// yet (the cores are shared with the page and other tabs) leaves its task to whoever is free,
// the owner included, instead of stalling the launch. TIR's lambdas split their loop by
// (task_id, num_task) whatever thread runs them, so results do not depend on who ran what.
// num_task 0 (what TVM's code generator passes) means one task per thread; a C kernel may ask
// for more, smaller tasks (e.g. 4 per thread) to balance better, if it uses no barrier. With
// at most one task per thread a barrier cannot deadlock: a thread waiting in it claims no more.

#include <stdatomic.h>
#include <stdint.h>

typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

int webkiln_serial_parallel_launch(FTVMParallelLambda flambda, void* cdata, int num_task);

static struct {
  _Atomic int32_t generation;  // futex: bumped once per launch (and by stop)
  _Atomic int32_t pending;     // futex: running helpers that have not yet acknowledged
  _Atomic int32_t ready;       // helpers that entered their loop
  _Atomic int32_t errors;      // tasks of this launch that returned non-zero
  _Atomic int32_t helper_tasks;  // tasks helpers have run, ever: proof that threads ran
  _Atomic int32_t next_task;     // the next task id of this launch to claim
  _Atomic int32_t stop;
  _Atomic int32_t barrier_arrived;
  _Atomic int32_t barrier_generation;
  int32_t running;        // helpers in their loop, set once they all are (webkiln_threads_enable)
  int32_t active;         // helpers given tasks (<= running), webkiln_threads_use
  int32_t main_may_wait;  // whether the owner may block (false on a browser's main thread)
  int32_t spin;           // polls before a wait blocks
  int32_t in_launch;      // a parallel loop inside a task runs serially
  FTVMParallelLambda flambda;
  void* cdata;
  TVMParallelGroupEnv env;
} pool = {.spin = 20000};

static _Thread_local int32_t is_helper;

static void wait_while_equal(_Atomic int32_t* word, int32_t value, int may_block) {
  for (int32_t i = 0; i < pool.spin; ++i) {
    if (atomic_load_explicit(word, memory_order_acquire) != value) return;
  }
  while (atomic_load_explicit(word, memory_order_acquire) == value) {
    if (may_block) __builtin_wasm_memory_atomic_wait32((int32_t*)word, value, -1);
  }
}

__attribute__((export_name("webkiln_threads_ready"))) int32_t webkiln_threads_ready(void) {
  return atomic_load(&pool.ready);
}

__attribute__((export_name("webkiln_threads_enable")))
void webkiln_threads_enable(int32_t running, int32_t main_may_wait, int32_t spin) {
  pool.running = running;
  pool.active = running;
  pool.main_may_wait = main_may_wait;
  pool.spin = spin;
}

__attribute__((export_name("webkiln_threads_use"))) void webkiln_threads_use(int32_t active) {
  pool.active = active < 0 ? 0 : active > pool.running ? pool.running : active;
}

__attribute__((export_name("webkiln_threads_helpers"))) int32_t webkiln_threads_helpers(void) {
  return pool.active;
}

__attribute__((export_name("webkiln_threads_helper_tasks"))) int32_t webkiln_threads_helper_tasks(void) {
  return atomic_load(&pool.helper_tasks);
}

// Helpers leave their loop; later launches are serial.
__attribute__((export_name("webkiln_threads_stop"))) void webkiln_threads_stop(void) {
  pool.running = 0;
  pool.active = 0;
  atomic_store(&pool.stop, 1);
  atomic_fetch_add(&pool.generation, 1);
  __builtin_wasm_memory_atomic_notify((int32_t*)&pool.generation, -1);
}

// A helper's loop (thread_state.c sets up the thread and calls it). `index` is 1..helpers.
void webkiln_thread_main(int32_t index) {
  is_helper = 1;
  int32_t seen = atomic_load(&pool.generation);
  atomic_fetch_add(&pool.ready, 1);
  for (;;) {
    wait_while_equal(&pool.generation, seen, 1);
    seen = atomic_load(&pool.generation);
    if (atomic_load(&pool.stop)) return;
    if (index <= pool.active) {
      for (int32_t id; (id = atomic_fetch_add(&pool.next_task, 1)) < pool.env.num_task;) {
        if (pool.flambda(id, &pool.env, pool.cdata) != 0) atomic_fetch_add(&pool.errors, 1);
        atomic_fetch_add_explicit(&pool.helper_tasks, 1, memory_order_relaxed);
      }
    }
    if (atomic_fetch_sub(&pool.pending, 1) == 1) __builtin_wasm_memory_atomic_notify((int32_t*)&pool.pending, 1);
  }
}

int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  if (pool.active == 0 || pool.in_launch || is_helper) return webkiln_serial_parallel_launch(flambda, cdata, num_task);
  int32_t n = num_task > 0 ? num_task : pool.active + 1;  // 0: TVM leaves the count to the runtime
  pool.in_launch = 1;
  pool.flambda = flambda;
  pool.cdata = cdata;
  pool.env.sync_handle = 0;
  pool.env.num_task = n;
  atomic_store(&pool.errors, 0);
  atomic_store(&pool.next_task, 0);
  atomic_store(&pool.pending, pool.running);
  atomic_fetch_add(&pool.generation, 1);  // sequentially consistent: publishes the job above
  __builtin_wasm_memory_atomic_notify((int32_t*)&pool.generation, -1);
  int rc = 0;
  for (int32_t id; (id = atomic_fetch_add(&pool.next_task, 1)) < n;) {
    if (flambda(id, &pool.env, cdata) != 0) rc = -1;
  }
  int32_t left;
  while ((left = atomic_load(&pool.pending)) != 0) wait_while_equal(&pool.pending, left, pool.main_may_wait);
  pool.in_launch = 0;
  return (rc != 0 || atomic_load(&pool.errors) != 0) ? -1 : 0;
}

// TIR's parallel barrier: all num_task tasks of the running launch meet here.
int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id;
  int32_t n = penv->num_task;
  if (n <= 1) return 0;
  int32_t gen = atomic_load(&pool.barrier_generation);
  if (atomic_fetch_add(&pool.barrier_arrived, 1) == n - 1) {
    atomic_store(&pool.barrier_arrived, 0);
    atomic_fetch_add(&pool.barrier_generation, 1);
    __builtin_wasm_memory_atomic_notify((int32_t*)&pool.barrier_generation, -1);
  } else {
    wait_while_equal(&pool.barrier_generation, gen, is_helper || pool.main_may_wait);
  }
  return 0;
}
