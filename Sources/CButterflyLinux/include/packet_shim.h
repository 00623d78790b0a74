#ifndef BUTTERFLY_PACKET_SHIM_H
#define BUTTERFLY_PACKET_SHIM_H
// AF_PACKET with mmap'd TPACKET_V2 rings (packet(7), Documentation/networking/packet_mmap.rst):
// the kernel structs come from <linux/if_packet.h> itself, so Swift reads the kernel's own
// layout; packet_shim.c `_Static_assert`s the sizes and offsets the Swift side relies on.
// <linux/if_packet.h> and glibc's <netpacket/packet.h> define the same structs: never include
// both in one translation unit.
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <stdint.h>

/// Bytes of `struct tpacket2_hdr` rounded up to TPACKET_ALIGNMENT: where the `sockaddr_ll`
/// of a received frame starts, and where the data of a transmit slot starts (the kernel sends
/// from `tp_hdrlen - sizeof(struct sockaddr_ll)` unless PACKET_TX_HAS_OFF is set).
enum { CBUTTERFLY_TPACKET2_HEADER_LENGTH = 32 };

/// Offset of `sll_pkttype` (PACKET_HOST, PACKET_OUTGOING, …) in `struct sockaddr_ll`.
enum { CBUTTERFLY_SLL_PKTTYPE_OFFSET = 10 };

/// ARPHRD_ETHER: the hardware type of Ethernet interfaces (the kernel's <linux/if_arp.h>
/// would drag in <linux/if.h>, which clashes with glibc's <net/if.h>).
enum { CBUTTERFLY_ARPHRD_ETHER = 1 };

/// The interface's hardware type (ARPHRD_*) and address (SIOCGIFHWADDR) through `fd`, any
/// socket. 0 or -1 with errno set (ENODEV: no such interface).
int cbutterfly_packet_interface_hardware_address(int fd, const char *name, uint16_t *type, uint8_t address[6]);

/// The interface's MTU (SIOCGIFMTU) through `fd`. 0 or -1 with errno set.
int cbutterfly_packet_interface_mtu(int fd, const char *name, int *mtu);

// Ring ownership words are shared with the kernel, which writes them from softirq context on
// another CPU: read them with acquire (the frame data the kernel wrote before handing over is
// visible after) and write them with release (our frame data is visible before the kernel
// sees the slot as its own). TPACKET_V2: every RX frame and TX slot starts with its own
// `struct tpacket2_hdr`, whose `tp_status` is the ownership word.

/// `tp_status` of an RX frame or TX slot, acquire.
static inline uint32_t cbutterfly_tpacket2_status(const void *frame) {
    const struct tpacket2_hdr *header = frame;
    return __atomic_load_n(&header->tp_status, __ATOMIC_ACQUIRE);
}

/// Hands an RX frame back to the kernel (TP_STATUS_KERNEL), release: every read of it happens
/// before.
static inline void cbutterfly_tpacket2_release(void *frame) {
    struct tpacket2_hdr *header = frame;
    __atomic_store_n(&header->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
}

/// Fills a TX slot's header and hands it to the kernel (TP_STATUS_SEND_REQUEST), release: the
/// frame bytes, already copied after the header, are visible to the kernel before the status.
static inline void cbutterfly_tpacket2_submit(void *slot, uint32_t length) {
    struct tpacket2_hdr *header = slot;
    header->tp_len = length;
    header->tp_snaplen = length;
    __atomic_store_n(&header->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
}
#endif
