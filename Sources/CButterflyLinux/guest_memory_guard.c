#define _GNU_SOURCE
#include "include/guest_memory_guard.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

// Written for this project. The handler reads the table with atomic loads only and makes one
// system call (mmap), so it is safe in a signal handler; registration is serialised by a mutex
// (control thread), and a slot's start is published last and cleared first.

#define GUARD_SLOTS 4096

static struct {
    uintptr_t start;
    size_t length;
    int poisoned;
} slots[GUARD_SLOTS];

static pthread_mutex_t registration = PTHREAD_MUTEX_INITIALIZER;
static int installed;
static struct sigaction previous;

static void on_sigbus(int signal, siginfo_t *info, void *context) {
    // Sent by a process (kill, tgkill: si_code <= 0), not raised by a fault: nothing to
    // repair, and the guard stays (a guard removed by `kill -BUS` would let the next shrunk
    // memory file kill the daemon).
    if (info->si_code <= 0) return;
    uintptr_t address = (uintptr_t)info->si_addr;
    for (int index = 0; index < GUARD_SLOTS; index++) {
        uintptr_t start = __atomic_load_n(&slots[index].start, __ATOMIC_ACQUIRE);
        size_t length = __atomic_load_n(&slots[index].length, __ATOMIC_ACQUIRE);
        if (start == 0 || address < start || address - start >= length) continue;
        // The whole mapping, not the page: a hugetlbfs mapping can only be replaced in whole
        // huge pages, and the front-end broke the contract for all of it anyway.
        void *zeros = mmap((void *)start, length, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
        if (zeros == MAP_FAILED) break;
        __atomic_store_n(&slots[index].poisoned, 1, __ATOMIC_RELEASE);
        return;  // the faulting access runs again, on zeros
    }
    // Not guest memory: a real bug. Back to what was there, and the fault repeats under it.
    (void)context;
    sigaction(signal, &previous, NULL);
}

int cbutterfly_guest_memory_guard(void *start, size_t length) {
    pthread_mutex_lock(&registration);
    if (!installed) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_sigaction = on_sigbus;
        action.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&action.sa_mask);
        if (sigaction(SIGBUS, &action, &previous) == 0) installed = 1;
    }
    int slot = -1;
    for (int index = 0; index < GUARD_SLOTS && installed; index++) {
        if (__atomic_load_n(&slots[index].start, __ATOMIC_ACQUIRE) != 0) continue;
        __atomic_store_n(&slots[index].poisoned, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&slots[index].length, length, __ATOMIC_RELAXED);
        __atomic_store_n(&slots[index].start, (uintptr_t)start, __ATOMIC_RELEASE);
        slot = index;
        break;
    }
    pthread_mutex_unlock(&registration);
    return slot;
}

void cbutterfly_guest_memory_unguard(int slot) {
    if (slot < 0 || slot >= GUARD_SLOTS) return;
    pthread_mutex_lock(&registration);
    __atomic_store_n(&slots[slot].start, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&registration);
}

int cbutterfly_guest_memory_poisoned(int slot) {
    if (slot < 0 || slot >= GUARD_SLOTS) return 0;
    return __atomic_load_n(&slots[slot].poisoned, __ATOMIC_ACQUIRE);
}
