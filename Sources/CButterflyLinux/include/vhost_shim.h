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
#endif
