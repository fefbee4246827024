/*
 * poll.c: a poll() loop on a shmbus wait set's descriptor, over two topics fed by other
 * processes, through the C API. The same loop fits epoll, select, libuv or GLib: watch
 * shmbus_waitset_fd for reading, time out after shmbus_waitset_timeout_hint_ms, then call
 * shmbus_waitset_try_wait (it never blocks) and read the subscribers it names.
 *
 *   poll sub TOPIC_A TOPIC_B COUNT   receive COUNT numbers (0, 1, ...) on each topic, check
 *                                    them, then poll 300 ms of quiet and print the loop's
 *                                    turns (a loop that spun would turn thousands of times)
 *   poll pub TOPIC COUNT             publish the numbers 0 .. COUNT-1, one per millisecond
 *
 * Both connect to the daemon at $SHMBUS_SOCKET (or the default socket). Build:
 *   cc -std=c11 -Wall -I bus-ffi/include bus-ffi/examples/poll.c \
 *      -L target/debug -lshmbus -Wl,-rpath,target/debug -o poll
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmbus.h"

static const shmbus_type U64 = {"u64", sizeof(uint64_t), _Alignof(uint64_t)};

#define CHECK(call)                                                                          \
    do {                                                                                     \
        shmbus_status s_ = (call);                                                           \
        if (s_ != SHMBUS_OK) {                                                               \
            fprintf(stderr, "%s failed: %s: %s\n", #call, shmbus_status_name(s_),            \
                    shmbus_last_error_message());                                            \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static uint64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static int publish(shmbus_bus *bus, const char *topic, uint64_t count) {
    shmbus_publisher *pub;
    shmbus_topic_options options;
    CHECK(shmbus_topic_options_init(&options));
    options.capacity = 64;
    CHECK(shmbus_publisher_open(bus, topic, SHMBUS_OPEN_OR_CREATE, &U64, &options, &pub));
    for (uint64_t i = 0; i < count; i++) {
        CHECK(shmbus_publisher_publish(pub, (const uint8_t *)&i, sizeof i, NULL));
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    printf("sent %llu\n", (unsigned long long)count);
    CHECK(shmbus_publisher_close(pub));
    return 0;
}

struct topic {
    const char *name;
    shmbus_subscriber *sub;
    uint64_t id;       /* its attachment in the wait set */
    uint64_t received; /* also the next number expected */
    uint64_t wrong;
};

/* Read a ready subscriber dry (until SHMBUS_ERR_EMPTY), checking each number. */
static void drain(struct topic *t) {
    for (;;) {
        shmbus_sample sample;
        shmbus_status s = shmbus_subscriber_try_recv(t->sub, &sample);
        if (s == SHMBUS_ERR_EMPTY) {
            return;
        }
        CHECK(s);
        uint64_t value;
        memcpy(&value, sample.data, sizeof value);
        if (sample.len != sizeof value || value != t->received) {
            t->wrong++;
        }
        t->received++;
        CHECK(shmbus_subscriber_release(t->sub));
    }
}

/* One turn of the loop: poll the descriptor (at most the hint), then try_wait. Returns
 * whether poll saw it readable; the ready ids go to ids, their number to *n. */
static int turn(shmbus_waitset *ws, int fd, uint64_t *ids, size_t cap, size_t *n) {
    int64_t hint;
    CHECK(shmbus_waitset_timeout_hint_ms(ws, &hint));
    if (hint < 0 || hint > 1000) {
        hint = 1000;
    }
    struct pollfd p = {fd, POLLIN, 0};
    int readable = poll(&p, 1, (int)hint);
    if (readable < 0) {
        perror("poll");
        exit(1);
    }
    CHECK(shmbus_waitset_try_wait(ws, ids, cap, n));
    return readable > 0;
}

static int subscribe(shmbus_bus *bus, const char *a, const char *b, uint64_t count) {
    struct topic topics[2] = {{a, NULL, 0, 0, 0}, {b, NULL, 0, 0, 0}};
    shmbus_waitset *ws;
    CHECK(shmbus_waitset_new(&ws));
    shmbus_topic_options options;
    CHECK(shmbus_topic_options_init(&options));
    options.capacity = 64;
    for (int i = 0; i < 2; i++) {
        CHECK(shmbus_subscriber_open(bus, topics[i].name, SHMBUS_OPEN_OR_CREATE, &U64, &options,
                                     &topics[i].sub));
        CHECK(shmbus_waitset_attach_subscriber(ws, topics[i].sub, &topics[i].id));
    }
    int fd;
    CHECK(shmbus_waitset_fd(ws, &fd));
    size_t n;
    uint64_t ids[4];
    CHECK(shmbus_waitset_try_wait(ws, ids, 4, &n)); /* arms the ports */
    printf("ready\n");
    fflush(stdout);

    uint64_t start = now_ms();
    while (topics[0].received < count || topics[1].received < count) {
        if (now_ms() - start > 60000) {
            fprintf(stderr, "timed out: %llu and %llu of %llu\n",
                    (unsigned long long)topics[0].received,
                    (unsigned long long)topics[1].received, (unsigned long long)count);
            return 1;
        }
        turn(ws, fd, ids, 4, &n);
        for (size_t i = 0; i < n; i++) {
            for (int t = 0; t < 2; t++) {
                if (ids[i] == topics[t].id) {
                    drain(&topics[t]);
                }
            }
        }
    }
    for (int t = 0; t < 2; t++) {
        printf("%s: received %llu, %llu wrong\n", topics[t].name,
               (unsigned long long)topics[t].received, (unsigned long long)topics[t].wrong);
    }

    /* Quiet: nothing is published; the loop sleeps until the hint (about 100 ms). */
    unsigned turns = 0, readable = 0, reported = 0;
    start = now_ms();
    while (now_ms() - start < 300) {
        readable += (unsigned)turn(ws, fd, ids, 4, &n);
        reported += (unsigned)n;
        turns++;
    }
    printf("quiet 300 ms: turns=%u readable=%u reported=%u\n", turns, readable, reported);

    for (int t = 0; t < 2; t++) {
        CHECK(shmbus_waitset_detach(ws, topics[t].id));
        CHECK(shmbus_subscriber_close(topics[t].sub));
    }
    CHECK(shmbus_waitset_free(ws));
    return topics[0].wrong + topics[1].wrong == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    shmbus_bus *bus;
    if (argc == 5 && strcmp(argv[1], "sub") == 0) {
        CHECK(shmbus_connect(&bus));
        int rc = subscribe(bus, argv[2], argv[3], strtoull(argv[4], NULL, 10));
        CHECK(shmbus_bus_close(bus));
        return rc;
    }
    if (argc == 4 && strcmp(argv[1], "pub") == 0) {
        CHECK(shmbus_connect(&bus));
        int rc = publish(bus, argv[2], strtoull(argv[3], NULL, 10));
        CHECK(shmbus_bus_close(bus));
        return rc;
    }
    fprintf(stderr, "usage: poll sub TOPIC_A TOPIC_B COUNT | poll pub TOPIC COUNT\n");
    return 2;
}
