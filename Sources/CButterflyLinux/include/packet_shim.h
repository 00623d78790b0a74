#ifndef BUTTERFLY_PACKET_SHIM_H
#define BUTTERFLY_PACKET_SHIM_H
// AF_PACKET with mmap'd TPACKET_V3 rings (packet(7), Documentation/networking/packet_mmap.rst):
// the kernel structs come from <linux/if_packet.h> itself, so Swift reads the kernel's own
// layout; packet_shim.c `_Static_assert`s the sizes and offsets the Swift side relies on.
// <linux/if_packet.h> and glibc's <netpacket/packet.h> define the same structs: never include
// both in one translation unit.
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <stdint.h>

/// Bytes of `struct tpacket3_hdr` rounded up to TPACKET_ALIGNMENT: where the `sockaddr_ll`
/// of a received frame starts, and where the data of a transmit slot starts (the kernel sends
/// from `tp_hdrlen - sizeof(struct sockaddr_ll)` unless PACKET_TX_HAS_OFF is set).
enum { CBUTTERFLY_TPACKET3_HEADER_LENGTH = 48 };

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
// sees the slot as its own).

/// `block_status` of an RX block (`struct tpacket_block_desc`), acquire.
static inline uint32_t cbutterfly_tpacket_block_status(const void *block) {
    const struct tpacket_block_desc *descriptor = block;
    return __atomic_load_n(&descriptor->hdr.bh1.block_status, __ATOMIC_ACQUIRE);
}

/// Hands an RX block back to the kernel (TP_STATUS_KERNEL), release: every read of its frames
/// happens before.
static inline void cbutterfly_tpacket_block_release(void *block) {
    struct tpacket_block_desc *descriptor = block;
    __atomic_store_n(&descriptor->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
}

/// `tp_status` of a TX slot (`struct tpacket3_hdr`), acquire.
static inline uint32_t cbutterfly_tpacket_slot_status(const void *slot) {
    const struct tpacket3_hdr *header = slot;
    return __atomic_load_n(&header->tp_status, __ATOMIC_ACQUIRE);
}

/// Fills a TX slot's header and hands it to the kernel (TP_STATUS_SEND_REQUEST), release: the
/// frame bytes, already copied after the header, are visible to the kernel before the status.
static inline void cbutterfly_tpacket_slot_submit(void *slot, uint32_t length) {
    struct tpacket3_hdr *header = slot;
    header->tp_next_offset = 0;  // V3 transmit refuses variable-sized slots
    header->tp_len = length;
    header->tp_snaplen = length;
    __atomic_store_n(&header->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
}
#endif
