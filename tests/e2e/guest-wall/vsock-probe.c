/* Guest-side probe for tests/e2e/guest-wall.sh (built static with gcc at --prepare time):
 *   vsock-probe CID PORT
 * tries connect(AF_VSOCK, CID, PORT) and prints one line: "connected" (exit 0), or
 * "connect: errno N (text)" (exit 1); "socket: errno N (text)" (exit 2) if AF_VSOCK itself is
 * refused. busybox has no vsock client. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: vsock-probe CID PORT\n");
        return 3;
    }
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) {
        printf("socket: errno %d (%s)\n", errno, strerror(errno));
        return 2;
    }
    /* vsock's own connect timeout (2 s) bounds a connect nobody answers; keep it short. */
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD, &tv, sizeof tv);
    struct sockaddr_vm a;
    memset(&a, 0, sizeof a);
    a.svm_family = AF_VSOCK;
    a.svm_cid = (unsigned)strtoul(argv[1], NULL, 0);
    a.svm_port = (unsigned)strtoul(argv[2], NULL, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        printf("connect: errno %d (%s)\n", errno, strerror(errno));
        return 1;
    }
    printf("connected\n");
    close(fd);
    return 0;
}
