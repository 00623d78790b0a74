#ifndef BUTTERFLY_VHOST_SHIM_H
#define BUTTERFLY_VHOST_SHIM_H
// Unix-socket messages with SCM_RIGHTS descriptors, for the vhost-user control socket.
#include <stddef.h>
#include <sys/types.h>

/// The most descriptors one vhost-user message may carry (SET_MEM_TABLE: one per region).
#define CBUTTERFLY_VHOST_MAX_FDS 8

/// Non-blocking recvmsg(2) of up to `length` bytes with the descriptors that come with them (close-on-exec).
/// Returns the byte count (0: peer closed) or -1 with errno. `*fd_count` receives how many
/// descriptors were stored in `fds` (at most CBUTTERFLY_VHOST_MAX_FDS); `*truncated` is 1 when
/// the sender passed more (the kernel closed the excess) or the control data did not fit.
ssize_t cbutterfly_recv_with_fds(int socket, void *buffer, size_t length, int *fds, int *fd_count, int *truncated);

/// sendmsg(2) of `length` bytes with `fd_count` descriptors (0…CBUTTERFLY_VHOST_MAX_FDS).
/// Returns the byte count or -1 with errno.
ssize_t cbutterfly_send_with_fds(int socket, const void *buffer, size_t length, const int *fds, int fd_count);

/// A non-blocking, close-on-exec Unix stream socket bound to `path` with mode `mode` and
/// listening. Returns the fd or -1 with errno (ENAMETOOLONG for a path sun_path cannot hold).
int cbutterfly_unix_listen(const char *path, unsigned int mode);

/// accept4(2) of a non-blocking, close-on-exec connection; -1 with errno (EAGAIN: none waits).
int cbutterfly_unix_accept(int listener);

/// A close-on-exec Unix stream socket connected to `path`, then made non-blocking. Returns the
/// fd or -1 with errno.
int cbutterfly_unix_connect(const char *path);

/// Memory ordering against a guest sharing the rings (VIRTIO 1.1 §2.6.13: read the index,
/// then the entries; write the entries, then the index). Inline fences, not calls.
static inline void cbutterfly_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void cbutterfly_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
/// Orders the used index store before the read of the guest's event index (a full fence).
static inline void cbutterfly_fence_full(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
/// Cache hints for guest memory the worker is about to read (a frame, a descriptor) or write
/// (a receive buffer): lines the guest's core wrote last, fetched in parallel ahead of use.
static inline void cbutterfly_prefetch(const void *address) { __builtin_prefetch(address, 0, 3); }
static inline void cbutterfly_prefetch_write(const void *address) { __builtin_prefetch(address, 1, 3); }
#endif
