#include "packet_shim.h"
#include <errno.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>

// The kernel layouts PacketSocketPort.swift depends on (linux/if_packet.h, packet_mmap.rst).
_Static_assert(sizeof(struct tpacket2_hdr) == 32, "tpacket2_hdr is 32 bytes");
_Static_assert(TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) == CBUTTERFLY_TPACKET2_HEADER_LENGTH,
               "V2 frame header length (sockaddr_ll / TX data offset)");
_Static_assert(TPACKET2_HDRLEN - sizeof(struct sockaddr_ll) == CBUTTERFLY_TPACKET2_HEADER_LENGTH,
               "V2 TX data starts at tp_hdrlen - sizeof(sockaddr_ll)");
_Static_assert(offsetof(struct tpacket2_hdr, tp_status) == 0, "tp_status");
_Static_assert(offsetof(struct tpacket2_hdr, tp_len) == 4, "tp_len");
_Static_assert(offsetof(struct tpacket2_hdr, tp_snaplen) == 8, "tp_snaplen");
_Static_assert(offsetof(struct tpacket2_hdr, tp_mac) == 12, "tp_mac");
_Static_assert(sizeof(struct tpacket_req) == 16, "tpacket_req is 16 bytes");
_Static_assert(sizeof(struct tpacket_stats) == 8, "tpacket_stats is 8 bytes");
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
