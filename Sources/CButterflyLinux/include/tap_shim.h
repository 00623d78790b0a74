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

/// Turns IPv6 off on an interface of this network namespace (its
/// /proc/sys/net/ipv6/conf/<name>/disable_ipv6). 0 or -1 with errno.
int cbutterfly_interface_disable_ipv6(const char *name);

/// A NETLINK_ROUTE socket of the caller's network namespace, bound. fd or -1 with errno.
int cbutterfly_netlink_open(void);

/// 1 when the tap's interface is in the caller's network namespace, 0 when the user moved it
/// to another one, -1 with errno when the kernel cannot tell (TUNGETDEVNETNS, Linux 5.2).
int cbutterfly_tap_in_own_namespace(int tap_fd);

/// The tap's current interface name (TUNGETIFF): 0, or -1 with errno.
int cbutterfly_tap_name(int tap_fd, char name[16]);

/// Puts interface `name` into interface group `group` (RTM_NEWLINK, IFLA_GROUP). 0 or -1.
int cbutterfly_interface_set_group(int netlink_fd, const char *name, uint32_t group);

/// Deletes every interface of `group` in the socket's namespace at once (RTM_DELLINK,
/// IFLA_GROUP): the kernel unregisters them together, one RCU grace period for all, where
/// closing each tap's fd waits for one each (~16–30 ms). 0 or -1 with errno.
int cbutterfly_interface_delete_group(int netlink_fd, uint32_t group);

/// The tap's drop statistics read in its own network namespace (TUNGETDEVNETNS, a netlink
/// socket created there, RTM_GETLINK IFLA_STATS64): `from_guest` = frames the guest sent that
/// the tap's queue toward the daemon had no room for (tx_dropped), `to_guest` = frames the
/// daemon wrote that the kernel dropped (rx_dropped). 0, or -1 with errno.
int cbutterfly_tap_dropped(int tap_fd, uint64_t *from_guest, uint64_t *to_guest);

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
