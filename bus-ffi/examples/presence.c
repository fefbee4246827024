/*
 * presence.c: counting and watching a topic's peers through the C API.
 *
 *   presence pub TOPIC N   open a publisher, wait for N subscribers, then print the number of
 *                          subscribers at every change a wait set reports, until none is left
 *   presence sub TOPIC     open a subscriber, wait for a publisher, print the count, then
 *                          stay attached until killed
 *
 * Both connect to the daemon at $SHMBUS_SOCKET (or the default socket). Build:
 *   cc -std=c11 -Wall -I bus-ffi/include bus-ffi/examples/presence.c \
 *      -L target/debug -lshmbus -Wl,-rpath,target/debug -o presence
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
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

static int watch_subscribers(shmbus_bus *bus, const char *topic, size_t want) {
    shmbus_publisher *pub;
    shmbus_waitset *ws;
    uint64_t id, ready;
    size_t count, n;
    CHECK(shmbus_publisher_open(bus, topic, SHMBUS_OPEN_OR_CREATE, &U64, NULL, &pub));
    printf("ready\n");
    fflush(stdout);
    CHECK(shmbus_publisher_wait_for_subscribers(pub, want, 60000, &count));
    printf("subscribers %zu\n", count);
    CHECK(shmbus_waitset_new(&ws));
    CHECK(shmbus_waitset_attach_publisher_presence(ws, pub, &id));
    printf("watching\n");
    fflush(stdout);
    do {
        CHECK(shmbus_waitset_wait(ws, 60000, &ready, 1, &n));
        if (n != 1 || ready != id) {
            fprintf(stderr, "no change of the subscriber count within 60 s\n");
            return 1;
        }
        CHECK(shmbus_publisher_subscriber_count(pub, &count));
        printf("subscribers %zu\n", count);
        fflush(stdout);
    } while (count > 0);
    CHECK(shmbus_waitset_free(ws));
    CHECK(shmbus_publisher_close(pub));
    return 0;
}

static int stay(shmbus_bus *bus, const char *topic) {
    shmbus_subscriber *sub;
    size_t count;
    CHECK(shmbus_subscriber_open(bus, topic, SHMBUS_OPEN_OR_CREATE, &U64, NULL, &sub));
    CHECK(shmbus_subscriber_wait_for_publishers(sub, 1, 60000, &count));
    printf("publishers %zu\n", count);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct timespec second = {1, 0};
        nanosleep(&second, NULL);
    }
}

int main(int argc, char **argv) {
    shmbus_bus *bus;
    int rc;
    if (argc == 4 && strcmp(argv[1], "pub") == 0) {
        CHECK(shmbus_connect(&bus));
        rc = watch_subscribers(bus, argv[2], (size_t)strtoull(argv[3], NULL, 10));
    } else if (argc == 3 && strcmp(argv[1], "sub") == 0) {
        CHECK(shmbus_connect(&bus));
        rc = stay(bus, argv[2]);
    } else {
        fprintf(stderr, "usage: presence pub TOPIC N | presence sub TOPIC\n");
        return 2;
    }
    CHECK(shmbus_bus_close(bus));
    return rc;
}
