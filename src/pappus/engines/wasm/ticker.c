/*
 * The wasm engine's epoch ticker in native code (loaded by ticker.py with ctypes).
 *
 * Why native: a Python ticker thread needs the GIL for every tick, and any
 * Python thread that holds the GIL for long (json.loads of a 40 MB request
 * body holds it for ~0.2 s) kept a function's infinite loop running past its
 * deadline by half a second and more. This thread never touches Python: it
 * calls Wasmtime's wasmtime_engine_increment_epoch, whose address Python hands
 * over, so a sandbox stops at its deadline whatever the interpreter is doing.
 *
 * The epoch follows the monotonic clock: epoch == floor((now - origin) / tick),
 * caught up after a late wake-up rather than counted per wake-up. The thread
 * parks (no wake-ups at all) once no invocation has run for `linger_ns`, and
 * enter() rebases the origin when it resumes, so there is never a burst of
 * catch-up ticks for idle time (which would race with a store being armed).
 *
 * Python reads `epoch` and `origin_ns` straight from struct ticker_view (the
 * first member): the thread stores `epoch` atomically; `origin_ns` changes
 * only in enter() while no invocation is active, i.e. never under an arm().
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "quiet_thread.h" /* placed beside this file by native_build */

typedef void (*increment_fn)(void *engine);

#define THREAD_NAME "pappus-epoch" /* what /proc/<pid>/task/<tid>/comm shows */

struct ticker_view {         /* read by Python: keep in step with ticker.py */
    uint64_t epoch;          /* ticks issued (the engine's epoch, which only we advance) */
    int64_t origin_ns;       /* CLOCK_MONOTONIC time of epoch 0 */
    int64_t tick_ns;
};

struct ticker {
    struct ticker_view view; /* first: Python's view starts at the ticker's address */
    increment_fn increment;
    void *engine;
    int64_t linger_ns;
    int64_t active;          /* invocations between enter() and exit() */
    int64_t idle_since_ns;
    int parked, closed, started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
};

size_t pappus_ticker_view_size(void) { return sizeof(struct ticker_view); }

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Issue every tick due by now. Called with the lock held. */
static void catch_up(struct ticker *t) {
    int64_t elapsed = now_ns() - t->view.origin_ns;
    uint64_t target = elapsed > 0 ? (uint64_t)(elapsed / t->view.tick_ns) : 0;
    while (t->view.epoch < target) {
        t->increment(t->engine);
        __atomic_store_n(&t->view.epoch, t->view.epoch + 1, __ATOMIC_RELEASE);
    }
}

static void *run(void *argument) {
    struct ticker *t = argument;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        while (!t->closed && t->active == 0 && now_ns() - t->idle_since_ns >= t->linger_ns) {
            t->parked = 1;
            pthread_cond_wait(&t->wake, &t->lock);
            t->parked = 0;
        }
        if (t->closed) break;
        int64_t next = t->view.origin_ns + (int64_t)(t->view.epoch + 1) * t->view.tick_ns;
        pthread_mutex_unlock(&t->lock);
        struct timespec until = {next / 1000000000, next % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) != 0) {
        }
        pthread_mutex_lock(&t->lock);
        catch_up(t);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* A parked ticker for `engine`; NULL if out of memory. The thread starts at the first enter(). */
struct ticker *pappus_ticker_new(increment_fn increment, void *engine, int64_t tick_ns,
                                 int64_t linger_ns) {
    if (!increment || !engine || tick_ns <= 0 || linger_ns < 0) return NULL;
    struct ticker *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->increment = increment;
    t->engine = engine;
    t->view.tick_ns = tick_ns;
    t->view.origin_ns = now_ns();
    t->linger_ns = linger_ns;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->wake, NULL);
    return t;
}

static int start(struct ticker *t) {
    if (start_quiet_thread(&t->thread, run, t, THREAD_NAME) != 0) return -1;
    t->started = 1;
    return 0;
}

/* One invocation begins: keep ticking until the matching exit(). 0, or -1 if closed or the
 * thread could not start (the caller must then not run anything: no deadline would hold). */
int pappus_ticker_enter(struct ticker *t) {
    int result = 0;
    pthread_mutex_lock(&t->lock);
    if (t->closed || (!t->started && start(t) != 0)) {
        result = -1;
    } else {
        if (t->active == 0) /* resume without a burst of catch-up ticks for idle time */
            t->view.origin_ns = now_ns() - (int64_t)t->view.epoch * t->view.tick_ns;
        t->active++;
        if (t->parked) pthread_cond_signal(&t->wake);
    }
    pthread_mutex_unlock(&t->lock);
    return result;
}

void pappus_ticker_exit(struct ticker *t) {
    pthread_mutex_lock(&t->lock);
    if (t->active > 0 && --t->active == 0) t->idle_since_ns = now_ns();
    pthread_mutex_unlock(&t->lock);
}

/* Stop the thread and free the ticker. */
void pappus_ticker_free(struct ticker *t) {
    pthread_mutex_lock(&t->lock);
    t->closed = 1;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
    if (t->started) pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->wake);
    free(t);
}
