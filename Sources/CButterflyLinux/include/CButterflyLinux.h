#ifndef BUTTERFLY_CBUTTERFLYLINUX_H
#define BUTTERFLY_CBUTTERFLYLINUX_H
// Linux interfaces that Glibc's Swift overlay does not expose. Only headers and tiny
// helpers live here; all logic is Swift.
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/vfs.h>
#include <sys/signalfd.h>
#include <unistd.h>

/// Writes the whole buffer to a descriptor (for log lines to stderr without stdio's shared
/// FILE state). Returns 0 or -1 with errno set.
int cbutterfly_write_all(int fd, const void *buffer, size_t length);

/// 1 when a process accepts connections on the Unix stream socket at `path`, else 0.
/// (libzmq silently replaces an existing ipc:// socket file; this lets the daemon refuse to
/// steal the endpoint of a running one.)
int cbutterfly_unix_socket_is_live(const char *path);

/// pipe2(fds, O_CLOEXEC): a pipe no other spawned process inherits. 0 or -1 with errno.
int cbutterfly_pipe_cloexec(int fds[2]);

/// Pins the calling thread to one CPU. 0 or an errno value.
int cbutterfly_pin_current_thread(int cpu);

#include "tap_shim.h"
#include "packet_shim.h"
#include "vhost_shim.h"
#include "guest_memory_guard.h"
#endif
