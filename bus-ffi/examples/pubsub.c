/*
 * pubsub.c: a publisher and a subscriber of a typed topic, through the C API.
 *
 *   pubsub sub TOPIC COUNT   receive COUNT readings, check each, print one line per reading
 *   pubsub pub TOPIC COUNT   publish COUNT readings (half loaned in place, half copied in)
 *   pubsub                   both in one process, with a daemon embedded in it
 *
 * The first two connect to the daemon at $SHMBUS_SOCKET (or the default socket). Build:
 *   cc -std=c11 -Wall -I bus-ffi/include bus-ffi/examples/pubsub.c \
 *      -L target/debug -lshmbus -Wl,-rpath,target/debug -o pubsub
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmbus.h"

/* The message: every party states the same type name, size and alignment. */
struct reading {
    uint64_t seq;
    double value;
    char text[16];
};

static const shmbus_type READING = {"reading", sizeof(struct reading), _Alignof(struct reading)};

#define CHECK(call)                                                                          \
    do {                                                                                     \
        shmbus_status s_ = (call);                                                           \
        if (s_ != SHMBUS_OK) {                                                               \
            fprintf(stderr, "%s failed: %s: %s\n", #call, shmbus_status_name(s_),            \
                    shmbus_last_error_message());                                            \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static void fill(struct reading *r, uint64_t seq) {
    memset(r, 0, sizeof *r);
    r->seq = seq;
    r->value = (double)seq * 1.5;
    snprintf(r->text, sizeof r->text, "reading %llu", (unsigned long long)seq);
}

static int publish(shmbus_bus *bus, const char *topic, uint64_t count) {
    shmbus_publisher *pub;
    shmbus_topic_options options;
    CHECK(shmbus_topic_options_init(&options));
    options.capacity = 16;
    CHECK(shmbus_publisher_open(bus, topic, SHMBUS_OPEN_OR_CREATE, &READING, &options, &pub));
    for (uint64_t i = 0; i < count; i++) {
        if (i % 2 == 0) {
            /* Zero copy: write the reading straight into the slot. */
            uint8_t *data;
            size_t capacity;
            CHECK(shmbus_publisher_loan(pub, &data, &capacity));
            if (capacity != sizeof(struct reading)) {
                fprintf(stderr, "capacity %zu, expected %zu\n", capacity, sizeof(struct reading));
                return 1;
            }
            fill((struct reading *)data, i);
            CHECK(shmbus_publisher_send(pub, NULL));
        } else {
            struct reading r;
            fill(&r, i);
            CHECK(shmbus_publisher_publish(pub, (const uint8_t *)&r, sizeof r, NULL));
        }
    }
    printf("sent %llu\n", (unsigned long long)count);
    CHECK(shmbus_publisher_close(pub));
    return 0;
}

static int subscribe(shmbus_bus *bus, const char *topic, uint64_t count) {
    shmbus_subscriber *sub;
    shmbus_topic_options options;
    CHECK(shmbus_topic_options_init(&options));
    options.capacity = 16;
    CHECK(shmbus_subscriber_open(bus, topic, SHMBUS_OPEN_OR_CREATE, &READING, &options, &sub));
    printf("ready\n");
    fflush(stdout);
    uint64_t bad = 0;
    for (uint64_t i = 0; i < count; i++) {
        shmbus_sample sample;
        CHECK(shmbus_subscriber_recv_timeout(sub, 10 * 1000 * 1000, &sample));
        const struct reading *r = (const struct reading *)sample.data;
        struct reading want;
        fill(&want, i);
        if (sample.len != sizeof want || memcmp(r, &want, sizeof want) != 0) {
            bad++;
        }
        printf("seq=%llu value=%.1f text=%s\n", (unsigned long long)r->seq, r->value, r->text);
        CHECK(shmbus_subscriber_release(sub));
    }
    printf("received %llu, %llu wrong\n", (unsigned long long)count, (unsigned long long)bad);
    CHECK(shmbus_subscriber_close(sub));
    return bad == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    shmbus_bus *bus;
    if (argc == 4) {
        uint64_t count = strtoull(argv[3], NULL, 10);
        CHECK(shmbus_connect(&bus));
        int rc = strcmp(argv[1], "pub") == 0 ? publish(bus, argv[2], count)
                                             : subscribe(bus, argv[2], count);
        CHECK(shmbus_bus_close(bus));
        return rc;
    }
    /* One process: an embedded daemon, a subscriber, then a publisher. */
    CHECK(shmbus_connect_embedded(&bus));
    shmbus_subscriber *sub;
    shmbus_publisher *pub;
    CHECK(shmbus_subscriber_open(bus, "demo/readings", SHMBUS_OPEN_OR_CREATE, &READING, NULL, &sub));
    CHECK(shmbus_publisher_open(bus, "demo/readings", SHMBUS_OPEN, &READING, NULL, &pub));
    struct reading r;
    fill(&r, 7);
    CHECK(shmbus_publisher_publish(pub, (const uint8_t *)&r, sizeof r, NULL));
    shmbus_sample sample;
    CHECK(shmbus_subscriber_recv(sub, &sample));
    printf("got %s (value %.1f) at sequence %llu\n", ((const struct reading *)sample.data)->text,
           ((const struct reading *)sample.data)->value, (unsigned long long)sample.sequence);
    CHECK(shmbus_subscriber_release(sub));
    CHECK(shmbus_publisher_close(pub));
    CHECK(shmbus_subscriber_close(sub));
    CHECK(shmbus_bus_close(bus));
    return 0;
}
