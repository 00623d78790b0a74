#include "packet_shim.h"
#include <errno.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>

// The kernel layouts PacketSocketPort.swift depends on (linux/if_packet.h, packet_mmap.rst).
_Static_assert(sizeof(struct tpacket3_hdr) == 48, "tpacket3_hdr is 48 bytes");
_Static_assert(TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) == CBUTTERFLY_TPACKET3_HEADER_LENGTH,
               "V3 frame header length (sockaddr_ll / TX data offset)");
_Static_assert(TPACKET3_HDRLEN - sizeof(struct sockaddr_ll) == CBUTTERFLY_TPACKET3_HEADER_LENGTH,
               "V3 TX data starts at tp_hdrlen - sizeof(sockaddr_ll)");
_Static_assert(offsetof(struct tpacket3_hdr, tp_next_offset) == 0, "tp_next_offset");
_Static_assert(offsetof(struct tpacket3_hdr, tp_snaplen) == 12, "tp_snaplen");
_Static_assert(offsetof(struct tpacket3_hdr, tp_len) == 16, "tp_len");
_Static_assert(offsetof(struct tpacket3_hdr, tp_status) == 20, "tp_status");
_Static_assert(offsetof(struct tpacket3_hdr, tp_mac) == 24, "tp_mac");
_Static_assert(sizeof(struct tpacket_hdr_v1) == 40, "tpacket_hdr_v1 is 40 bytes");
_Static_assert(sizeof(struct tpacket_block_desc) == 48, "tpacket_block_desc is 48 bytes");
_Static_assert(offsetof(struct tpacket_block_desc, hdr.bh1.block_status) == 8, "block_status");
_Static_assert(offsetof(struct tpacket_block_desc, hdr.bh1.num_pkts) == 12, "num_pkts");
_Static_assert(offsetof(struct tpacket_block_desc, hdr.bh1.offset_to_first_pkt) == 16, "offset_to_first_pkt");
_Static_assert(sizeof(struct tpacket_req3) == 28, "tpacket_req3 is 28 bytes");
_Static_assert(sizeof(struct tpacket_stats_v3) == 12, "tpacket_stats_v3 is 12 bytes");
_Static_assert(sizeof(struct sockaddr_ll) == 20, "sockaddr_ll is 20 bytes");
_Static_assert(offsetof(struct sockaddr_ll, sll_pkttype) == CBUTTERFLY_SLL_PKTTYPE_OFFSET, "sll_pkttype");
_Static_assert(sizeof(struct packet_mreq) == 16, "packet_mreq is 16 bytes");
_Static_assert(sizeof(struct ifreq) == 40, "ifreq is 40 bytes");
_Static_assert(ARPHRD_ETHER == CBUTTERFLY_ARPHRD_ETHER, "ARPHRD_ETHER");

static int fill_request(struct ifreq *request, const char *name) {
    if (strlen(name) >= IFNAMSIZ) {
        errno = EINVAL;
        return -1;
    }
    memset(request, 0, sizeof(*request));
    strncpy(request->ifr_name, name, IFNAMSIZ - 1);
    return 0;
}

int cbutterfly_packet_interface_hardware_address(int fd, const char *name, uint16_t *type, uint8_t address[6]) {
    struct ifreq request;
    if (fill_request(&request, name) != 0) return -1;
    if (ioctl(fd, SIOCGIFHWADDR, &request) != 0) return -1;
    *type = request.ifr_hwaddr.sa_family;
    memcpy(address, request.ifr_hwaddr.sa_data, 6);
    return 0;
}

int cbutterfly_packet_interface_mtu(int fd, const char *name, int *mtu) {
    struct ifreq request;
    if (fill_request(&request, name) != 0) return -1;
    if (ioctl(fd, SIOCGIFMTU, &request) != 0) return -1;
    *mtu = request.ifr_mtu;
    return 0;
}
