/*
 * Start a helper thread of a native library loaded into the worker (the wasm
 * engine's epoch ticker, the deadline thread). Shared by their sources:
 * native_build places it beside each one when building.
 */
#ifndef PAPPUS_QUIET_THREAD_H
#define PAPPUS_QUIET_THREAD_H

#include <pthread.h>
#include <signal.h>

/* Start `run(argument)` as thread `*thread` named `name` (as /proc/<pid>/task/<tid>/comm
 * shows it), with a small stack and every signal blocked: signals are the interpreter's
 * business. 0, or -1 if it could not start. */
static int start_quiet_thread(pthread_t *thread, void *(*run)(void *), void *argument,
                              const char *name) {
    sigset_t all, previous;
    sigfillset(&all);
    pthread_attr_t attributes;
    if (pthread_attr_init(&attributes) != 0) return -1;
    pthread_attr_setstacksize(&attributes, 64 * 1024);
    pthread_sigmask(SIG_BLOCK, &all, &previous);
    int error = pthread_create(thread, &attributes, run, argument);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    pthread_attr_destroy(&attributes);
    if (error != 0) return -1;
    pthread_setname_np(*thread, name);
    return 0;
}

#endif
