/*
 * The physical limit of "one QMP command as a whole process", for
 * scripts/bench.sh: connect to a UNIX socket, read the greeting, negotiate,
 * send one command, copy its reply to standard output, exit. Reads in large
 * chunks, no JSON parsing, no threads, no allocation beyond one buffer.
 *
 *   cc -O2 -o qmp-limit scripts/qmp-limit.c
 *   qmp-limit SOCKET COMMAND        e.g. qmp-limit /tmp/qmp.sock query-version
 *
 * QEMU ends every message with "\r\n" and never puts a raw newline inside
 * one, so a message is a line. Lines before the reply that are events
 * ({"timestamp": ...) are skipped. Exit status 0 when a reply came, 1 when
 * anything failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char buf[1 << 20];
static size_t have, start;

/* The next line (without "\r\n") in buf[start..], reading more as needed;
 * its length in *len. The buffer grows by compaction only: a line larger
 * than the buffer is copied out in pieces (that is the schema's case). */
static int next_line(int fd, int out, int copy, size_t *total)
{
    *total = 0;
    for (;;) {
        char *nl = memchr(buf + start, '\n', have - start);
        size_t upto = nl ? (size_t)(nl - buf) + 1 : have;
        if (copy && upto > start) {
            size_t n = upto - start;
            const char *p = buf + start;
            while (n > 0) {
                ssize_t w = write(out, p, n);
                if (w <= 0)
                    return -1;
                p += w;
                n -= (size_t)w;
            }
        }
        *total += upto - start;
        start = upto;
        if (nl)
            return 0;
        have = start = 0;
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0)
            return -1;
        have = (size_t)r;
    }
}

/* The first bytes of the next line, to tell an event from a reply; the line
 * is then consumed (copied to stdout if copy). */
static int skip_or_copy(int fd, int copy)
{
    size_t total;
    return next_line(fd, 1, copy, &total);
}

static int peek(int fd, const char *prefix)
{
    size_t n = strlen(prefix);
    while (have - start < n) {
        if (start > 0) {
            memmove(buf, buf + start, have - start);
            have -= start;
            start = 0;
        }
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    return memcmp(buf + start, prefix, n) == 0;
}

static int send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SOCKET COMMAND\n", argv[0]);
        return 2;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof sa.sun_path)
        return 1;
    strcpy(sa.sun_path, argv[1]);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("connect");
        return 1;
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "{\"execute\":\"%s\"}", argv[2]);
    if (skip_or_copy(fd, 0) < 0 /* greeting */
        || send_all(fd, "{\"execute\":\"qmp_capabilities\"}") < 0
        || skip_or_copy(fd, 0) < 0 /* its reply */
        || send_all(fd, cmd) < 0)
        return 1;
    for (;;) {
        int ev = peek(fd, "{\"timestamp\"");
        if (ev < 0)
            return 1;
        if (skip_or_copy(fd, !ev) < 0)
            return 1;
        if (!ev)
            return 0;
    }
}
