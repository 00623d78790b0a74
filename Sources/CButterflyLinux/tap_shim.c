#include "tap_shim.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int cbutterfly_tap_open(const char *name, int *offloads) {
    if (strlen(name) >= IFNAMSIZ) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    request.ifr_flags = IFF_TAP | IFF_NO_PI | (*offloads ? IFF_VNET_HDR : 0);
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &request) < 0) goto fail;
    if (*offloads) {
        /* Every frame carries a 10-byte struct virtio_net_hdr; the kernel may hand over
           partial checksums and TCP super-frames (it segments UDP and ECN itself). */
        int header_size = 10;
        if (ioctl(fd, TUNSETVNETHDRSZ, &header_size) < 0 ||
            ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) {
            /* A kernel that refuses: the plain mode still works (a frame per read). */
            close(fd);
            *offloads = 0;
            return cbutterfly_tap_open(name, offloads);
        }
    }
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

static int interface_ioctl(unsigned long operation, struct ifreq *request) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int result = ioctl(fd, operation, request);
    int saved = errno;
    close(fd);
    errno = saved;
    return result < 0 ? -1 : 0;
}

static int prepare(struct ifreq *request, const char *name) {
    if (strlen(name) >= IFNAMSIZ) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memset(request, 0, sizeof(*request));
    strncpy(request->ifr_name, name, IFNAMSIZ - 1);
    return 0;
}

int cbutterfly_interface_set_mac(const char *name, const uint8_t mac[6]) {
    struct ifreq request;
    if (prepare(&request, name) < 0) return -1;
    request.ifr_hwaddr.sa_family = 1; /* ARPHRD_ETHER */
    memcpy(request.ifr_hwaddr.sa_data, mac, 6);
    return interface_ioctl(SIOCSIFHWADDR, &request);
}

int cbutterfly_interface_set_mtu(const char *name, int mtu) {
    struct ifreq request;
    if (prepare(&request, name) < 0) return -1;
    request.ifr_mtu = mtu;
    return interface_ioctl(SIOCSIFMTU, &request);
}

int cbutterfly_interface_set_txqueuelen(const char *name, int length) {
    struct ifreq request;
    if (prepare(&request, name) < 0) return -1;
    request.ifr_qlen = length;
    return interface_ioctl(SIOCSIFTXQLEN, &request);
}

int cbutterfly_interface_set_up(const char *name, int up) {
    struct ifreq request;
    if (prepare(&request, name) < 0) return -1;
    if (interface_ioctl(SIOCGIFFLAGS, &request) < 0) return -1;
    if (up)
        request.ifr_flags |= IFF_UP;
    else
        request.ifr_flags &= ~IFF_UP;
    return interface_ioctl(SIOCSIFFLAGS, &request);
}

_Static_assert(sizeof(struct ifreq) == 40, "struct ifreq is 40 bytes on x86_64 Linux");
