#ifndef BUTTERFLY_GUEST_MEMORY_GUARD_H
#define BUTTERFLY_GUEST_MEMORY_GUARD_H
// A SIGBUS guard for memory a vhost-user front-end shares with us.
//
// The front-end keeps its memory file and may shrink it after we mapped it (ftruncate): the
// next access to a page past the new end raises SIGBUS, which would kill the daemon and every
// other NIC with it. Registered mappings are guarded: a fault inside one replaces the whole
// mapping with anonymous zero pages (the access then completes, reading zeros) and marks it
// poisoned; the NIC's control side sees the mark and drops that front-end. A SIGBUS anywhere
// else keeps its default action.
#include <stddef.h>

/// Registers `[start, start + length)` (a whole mmap'd mapping); installs the handler on first
/// use. Returns a slot for the calls below, or -1 when every slot is taken.
int cbutterfly_guest_memory_guard(void *start, size_t length);

/// Forgets the slot (before the mapping is unmapped).
void cbutterfly_guest_memory_unguard(int slot);

/// 1 once a fault hit the slot's mapping (it now holds zeros), else 0.
int cbutterfly_guest_memory_poisoned(int slot);
#endif
