#ifndef BUTTERFLY_TAP_SHIM_H
#define BUTTERFLY_TAP_SHIM_H
#include <stdint.h>

/// Opens /dev/net/tun as a tap interface named `name` (IFF_TAP | IFF_NO_PI), non-blocking
/// and close-on-exec. With `*offloads` set, also IFF_VNET_HDR (10-byte virtio-net header on
/// every frame) and TUNSETOFFLOAD TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6; if the kernel refuses
/// those, the tap is reopened without them and `*offloads` cleared. Returns the fd, or -1 with
/// errno set.
int cbutterfly_tap_open(const char *name, int *offloads);

/// Sets an interface's hardware address (SIOCSIFHWADDR). 0 or -1 with errno.
int cbutterfly_interface_set_mac(const char *name, const uint8_t mac[6]);

/// Sets an interface's MTU (SIOCSIFMTU). 0 or -1 with errno.
int cbutterfly_interface_set_mtu(const char *name, int mtu);

/// Sets an interface's transmit queue length (SIOCSIFTXQLEN). 0 or -1 with errno.
int cbutterfly_interface_set_txqueuelen(const char *name, int length);

/// Brings an interface up or down (SIOCGIFFLAGS / SIOCSIFFLAGS). 0 or -1 with errno.
int cbutterfly_interface_set_up(const char *name, int up);

/// Counters shared between the worker (the only writer) and the control plane (reader):
/// relaxed atomic loads and stores, so a reader never sees a torn value and the writer pays
/// no locked instruction.
static inline void cbutterfly_counter_add(uint64_t *counter, uint64_t value) {
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + value, __ATOMIC_RELAXED);
}

static inline void cbutterfly_counter_store(uint64_t *counter, uint64_t value) {
    __atomic_store_n(counter, value, __ATOMIC_RELAXED);
}

static inline uint64_t cbutterfly_counter_load(const uint64_t *counter) {
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}
#endif
