#define _GNU_SOURCE /* setns */
#include "tap_shim.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
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

int cbutterfly_interface_disable_ipv6(const char *name) {
    char path[64];
    if (strlen(name) >= IFNAMSIZ || strchr(name, '/') != NULL) {
        errno = EINVAL;
        return -1;
    }
    snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -1;
    ssize_t written = write(fd, "1", 1);
    int saved = errno;
    close(fd);
    errno = saved;
    return written == 1 ? 0 : -1;
}

_Static_assert(sizeof(struct ifreq) == 40, "struct ifreq is 40 bytes on x86_64 Linux");

/* ---- rtnetlink: batch deletion and statistics of taps ---- */

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/stat.h>

#ifndef TUNGETDEVNETNS
#define TUNGETDEVNETNS _IO('T', 227)
#endif

/* One request, one answer: NLM_F_ACK for changes (an NLMSG_ERROR carrying 0 on success), the
   RTM_NEWLINK reply for a query. Returns the reply's length, or -1 with errno. */
static int netlink_exchange(int fd, struct nlmsghdr *request, char *reply, size_t capacity) {
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, request, request->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0) return -1;
    for (;;) {
        ssize_t length = recv(fd, reply, capacity, 0);
        if (length < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        struct nlmsghdr *answer = (struct nlmsghdr *)reply;
        if (!NLMSG_OK(answer, (size_t)length)) {
            errno = EPROTO;
            return -1;
        }
        if (answer->nlmsg_seq != request->nlmsg_seq) continue; /* a stale answer */
        if (answer->nlmsg_type == NLMSG_ERROR) {
            struct nlmsgerr *error = NLMSG_DATA(answer);
            if (error->error != 0) {
                errno = -error->error;
                return -1;
            }
        }
        return (int)length;
    }
}

static void add_attribute(struct nlmsghdr *message, unsigned short type, const void *data, size_t length) {
    struct rtattr *attribute = (struct rtattr *)((char *)message + NLMSG_ALIGN(message->nlmsg_len));
    attribute->rta_type = type;
    attribute->rta_len = RTA_LENGTH(length);
    memcpy(RTA_DATA(attribute), data, length);
    message->nlmsg_len = NLMSG_ALIGN(message->nlmsg_len) + RTA_ALIGN(attribute->rta_len);
}

struct link_request {
    struct nlmsghdr header;
    struct ifinfomsg link;
    char attributes[64];
};

static void prepare_link(struct link_request *request, unsigned short type, unsigned short flags) {
    static unsigned int sequence;
    memset(request, 0, sizeof(*request));
    request->header.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    request->header.nlmsg_type = type;
    request->header.nlmsg_flags = NLM_F_REQUEST | flags;
    request->header.nlmsg_seq = __atomic_add_fetch(&sequence, 1, __ATOMIC_RELAXED);
    request->link.ifi_family = AF_UNSPEC;
}

int cbutterfly_netlink_open(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) return -1;
    struct sockaddr_nl local = {.nl_family = AF_NETLINK};
    if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cbutterfly_tap_in_own_namespace(int tap_fd) {
    int namespace = ioctl(tap_fd, TUNGETDEVNETNS);
    if (namespace < 0) return -1;
    struct stat device, own;
    int same = fstat(namespace, &device) == 0 && stat("/proc/self/ns/net", &own) == 0 &&
               device.st_ino == own.st_ino && device.st_dev == own.st_dev;
    close(namespace);
    return same;
}

int cbutterfly_tap_name(int tap_fd, char name[16]) {
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    if (ioctl(tap_fd, TUNGETIFF, &request) < 0) return -1;
    memcpy(name, request.ifr_name, IFNAMSIZ);
    name[IFNAMSIZ - 1] = 0;
    return 0;
}

int cbutterfly_interface_set_group(int netlink_fd, const char *name, uint32_t group) {
    struct link_request request;
    char reply[1024];
    prepare_link(&request, RTM_NEWLINK, NLM_F_ACK);
    add_attribute(&request.header, IFLA_IFNAME, name, strnlen(name, IFNAMSIZ - 1) + 1);
    add_attribute(&request.header, IFLA_GROUP, &group, sizeof(group));
    return netlink_exchange(netlink_fd, &request.header, reply, sizeof(reply)) < 0 ? -1 : 0;
}

int cbutterfly_interface_delete_group(int netlink_fd, uint32_t group) {
    struct link_request request;
    char reply[1024];
    prepare_link(&request, RTM_DELLINK, NLM_F_ACK);
    add_attribute(&request.header, IFLA_GROUP, &group, sizeof(group));
    return netlink_exchange(netlink_fd, &request.header, reply, sizeof(reply)) < 0 ? -1 : 0;
}

int cbutterfly_tap_dropped(int tap_fd, uint64_t *from_guest, uint64_t *to_guest) {
    char name[IFNAMSIZ];
    if (cbutterfly_tap_name(tap_fd, name) < 0) return -1;
    /* A netlink socket answers for the namespace it was created in: create it in the tap's
       (which the user may have moved the interface to), then come back. */
    int device_namespace = ioctl(tap_fd, TUNGETDEVNETNS);
    if (device_namespace < 0) return -1;
    int own_namespace = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (own_namespace < 0) {
        close(device_namespace);
        return -1;
    }
    int netlink = -1;
    if (setns(device_namespace, CLONE_NEWNET) == 0) {
        netlink = cbutterfly_netlink_open();
        int saved = errno;
        if (setns(own_namespace, CLONE_NEWNET) != 0) abort(); /* never run on in a foreign namespace */
        errno = saved;
    }
    close(device_namespace);
    close(own_namespace);
    if (netlink < 0) return -1;
    struct link_request request;
    static __thread char reply[8192];
    prepare_link(&request, RTM_GETLINK, 0);
    add_attribute(&request.header, IFLA_IFNAME, name, strlen(name) + 1);
    int length = netlink_exchange(netlink, &request.header, reply, sizeof(reply));
    int saved = errno;
    close(netlink);
    errno = saved;
    if (length < 0) return -1;
    struct nlmsghdr *answer = (struct nlmsghdr *)reply;
    if (answer->nlmsg_type != RTM_NEWLINK) {
        errno = EPROTO;
        return -1;
    }
    struct ifinfomsg *link = NLMSG_DATA(answer);
    int remaining = (int)IFLA_PAYLOAD(answer);
    for (struct rtattr *attribute = IFLA_RTA(link); RTA_OK(attribute, remaining);
         attribute = RTA_NEXT(attribute, remaining)) {
        if (attribute->rta_type == IFLA_STATS64 && RTA_PAYLOAD(attribute) >= sizeof(struct rtnl_link_stats64)) {
            struct rtnl_link_stats64 stats;
            memcpy(&stats, RTA_DATA(attribute), sizeof(stats));
            /* The tap's transmit side is toward the daemon: what the guest sent that did not
               fit the queue is its tx_dropped; rx_dropped, what the daemon wrote that the
               kernel refused. */
            *from_guest = stats.tx_dropped;
            *to_guest = stats.rx_dropped;
            return 0;
        }
    }
    errno = ENODATA;
    return -1;
}
