/*
 * Deadlines that hold whatever the interpreter is doing (loaded by deadlines.py with ctypes).
 *
 * Why native: a deadline enforced by a Python thread (a timer that sends the
 * SIGKILL, a watchdog that kicks a vCPU) needs the GIL to act, and any thread
 * that holds the GIL in a long C call (json.loads of a 40 MB request body
 * holds it ~0.2 s) let a sandbox run on past its deadline: a process-engine
 * loop with a 200 ms deadline used up to 421 ms of CPU beside two such
 * threads. This thread never touches Python.
 *
 * One thread serves every deadline of the worker process. A watch is one of:
 *   - kill: pidfd_send_signal(pidfd, SIGKILL) at the deadline (a sandbox process);
 *   - kick: store 1 to a byte (a vCPU's kvm_run.immediate_exit), then
 *     pthread_kill(thread, signo) (ends a KVM_RUN in progress).
 * Watches are kept in a list sorted by deadline (new deadlines are usually the
 * latest, so inserting walks from the tail). The thread sleeps until the
 * earliest one, or parks while there is none.
 *
 * The contract that makes it safe: every watch is cancelled exactly once, and
 * its owner closes the pidfd (or unmaps the byte, or ends the thread) only
 * after the cancel returned. Cancelling and firing take the same lock, so once
 * cancel() returns the thread never touches the watch's resources again.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "quiet_thread.h" /* placed beside this file by native_build */

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

#define THREAD_NAME "pappus-deadline" /* what /proc/<pid>/task/<tid>/comm shows */
#define PARKED INT64_MAX

enum action { ACTION_KILL = 1, ACTION_KICK = 2 };

struct watch {
    struct watch *previous, *next; /* in the pending list while not fired */
    int64_t deadline_ns;           /* CLOCK_MONOTONIC */
    int action;
    int fired;
    int pidfd;                     /* ACTION_KILL */
    volatile uint8_t *flag;        /* ACTION_KICK */
    pthread_t thread;
    int signo;
};

struct watchdog {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct watch pending;          /* sentinel of the sorted list */
    int64_t sleeping_until;        /* the deadline the thread waits for; PARKED: none */
    uint64_t fired;                /* watches fired so far */
    int started, closed;
    pthread_t thread;
};

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void unlink_watch(struct watch *w) {
    w->previous->next = w->next;
    w->next->previous = w->previous;
    w->previous = w->next = w;
}

static void fire(struct watch *w) {
    if (w->action == ACTION_KILL) {
        syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0); /* ESRCH: already gone */
    } else {
        __atomic_store_n(w->flag, 1, __ATOMIC_SEQ_CST); /* before the signal: see kvm/vm.py */
        pthread_kill(w->thread, w->signo);
    }
    w->fired = 1;
}

static void *run(void *argument) {
    struct watchdog *d = argument;
    pthread_mutex_lock(&d->lock);
    while (!d->closed) {
        int64_t now = now_ns();
        struct watch *first;
        while ((first = d->pending.next) != &d->pending && first->deadline_ns <= now) {
            unlink_watch(first);
            fire(first);
            d->fired++;
        }
        if (first == &d->pending) {
            d->sleeping_until = PARKED;
            pthread_cond_wait(&d->wake, &d->lock);
        } else {
            d->sleeping_until = first->deadline_ns;
            struct timespec until = {first->deadline_ns / 1000000000,
                                     first->deadline_ns % 1000000000};
            pthread_cond_timedwait(&d->wake, &d->lock, &until);
        }
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* A watchdog with no thread yet (it starts at the first watch); NULL if out of memory. */
struct watchdog *pappus_watchdog_new(void) {
    struct watchdog *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&d->wake, &attributes);
    pthread_condattr_destroy(&attributes);
    pthread_mutex_init(&d->lock, NULL);
    d->pending.previous = d->pending.next = &d->pending;
    d->sleeping_until = PARKED;
    return d;
}

static int start(struct watchdog *d) {
    if (start_quiet_thread(&d->thread, run, d, THREAD_NAME) != 0) return -1;
    d->started = 1;
    return 0;
}

static struct watch *add(struct watchdog *d, struct watch *w) {
    pthread_mutex_lock(&d->lock);
    if (d->closed || (!d->started && start(d) != 0)) {
        pthread_mutex_unlock(&d->lock);
        free(w);
        return NULL;
    }
    struct watch *before = d->pending.previous; /* the latest deadline: usually ours follows */
    while (before != &d->pending && before->deadline_ns > w->deadline_ns) before = before->previous;
    w->previous = before;
    w->next = before->next;
    before->next->previous = w;
    before->next = w;
    if (w->deadline_ns < d->sleeping_until) pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->lock);
    return w;
}

/* Kill the process behind `pidfd` at `deadline_ns`. NULL if out of memory, closed, or the
 * thread could not start (the caller must then not run anything: no deadline would hold). */
struct watch *pappus_watchdog_kill_at(struct watchdog *d, int64_t deadline_ns, int pidfd) {
    struct watch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->deadline_ns = deadline_ns;
    w->action = ACTION_KILL;
    w->pidfd = pidfd;
    return add(d, w);
}

/* At `deadline_ns`, set `*flag` to 1 and send `signo` to `thread`. NULL as kill_at. */
struct watch *pappus_watchdog_kick_at(struct watchdog *d, int64_t deadline_ns, uint8_t *flag,
                                      unsigned long thread, int signo) {
    struct watch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->deadline_ns = deadline_ns;
    w->action = ACTION_KICK;
    w->flag = flag;
    w->thread = (pthread_t)thread;
    w->signo = signo;
    return add(d, w);
}

/* Forget `w` (exactly once per watch); 1 if it fired, else 0. Afterwards the thread never
 * touches its pidfd, byte or thread again. */
int pappus_watchdog_cancel(struct watchdog *d, struct watch *w) {
    pthread_mutex_lock(&d->lock);
    int fired = w->fired;
    if (!fired) unlink_watch(w);
    pthread_mutex_unlock(&d->lock);
    free(w);
    return fired;
}

uint64_t pappus_watchdog_fired(struct watchdog *d) {
    pthread_mutex_lock(&d->lock);
    uint64_t fired = d->fired;
    pthread_mutex_unlock(&d->lock);
    return fired;
}

/* Stop the thread and free the watchdog; watches not cancelled yet are dropped unfired
 * (their owners must not cancel them afterwards). */
void pappus_watchdog_free(struct watchdog *d) {
    pthread_mutex_lock(&d->lock);
    d->closed = 1;
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->lock);
    if (d->started) pthread_join(d->thread, NULL);
    while (d->pending.next != &d->pending) {
        struct watch *w = d->pending.next;
        unlink_watch(w);
        free(w);
    }
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->wake);
    free(d);
}
