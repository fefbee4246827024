/*
 * pingpong.c: 64-byte ping-pong through the C API, busy-polling, for the cost of the FFI.
 * Its twin in Rust is pingpong.rs (same topics, same steps); that example also drives both:
 *
 *   cc -O2 -I bus-ffi/include bus-ffi/examples/pingpong.c -L target/release -lshmbus \
 *      -Wl,-rpath,$PWD/target/release -o target/release/pingpong-c
 *   cargo run --release -p bus-ffi --example pingpong -- target/release/pingpong-c
 *
 *   pingpong-c pong ROUNDS   echo ROUNDS messages (prints "ready" once subscribed)
 *   pingpong-c ping ROUNDS   send, wait for the echo, time it; prints "p50_ns=... p99_ns=..."
 *   pingpong-c calls ROUNDS  one process: loan, set_len, send, receive, release on one lossless
 *                            topic, ROUNDS times; prints "ns_per_round=..." (no other core)
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmbus.h"

#define SIZE 64
#define WARMUP 10000

#define CHECK(call)                                                                          \
    do {                                                                                     \
        shmbus_status s_ = (call);                                                           \
        if (s_ != SHMBUS_OK) {                                                               \
            fprintf(stderr, "%s: %s\n", #call, shmbus_last_error_message());                \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The cost of the calls alone: one process publishes and receives on one topic. */
static int calls(shmbus_bus *bus, uint64_t rounds) {
    shmbus_topic_options options;
    CHECK(shmbus_topic_options_init(&options));
    options.slot_size = SIZE;
    options.capacity = 16;
    shmbus_publisher *pub;
    shmbus_subscriber *sub;
    CHECK(shmbus_publisher_open(bus, "bench/ffi/calls", SHMBUS_OPEN_OR_CREATE, NULL, &options, &pub));
    CHECK(shmbus_subscriber_open(bus, "bench/ffi/calls", SHMBUS_OPEN, NULL, NULL, &sub));
    uint64_t t0 = 0, sum = 0;
    for (uint64_t i = 0; i < rounds + WARMUP; i++) {
        if (i == WARMUP) {
            t0 = now_ns();
        }
        uint8_t *data;
        size_t capacity;
        shmbus_sample sample;
        CHECK(shmbus_publisher_loan(pub, &data, &capacity));
        memcpy(data, &i, sizeof i);
        CHECK(shmbus_publisher_set_len(pub, SIZE));
        CHECK(shmbus_publisher_send(pub, NULL));
        CHECK(shmbus_subscriber_try_recv(sub, &sample));
        sum += sample.data[0];
        CHECK(shmbus_subscriber_release(sub));
    }
    printf("ns_per_round=%.1f (sum %llu)\n", (double)(now_ns() - t0) / (double)rounds,
           (unsigned long long)sum);
    CHECK(shmbus_publisher_close(pub));
    CHECK(shmbus_subscriber_close(sub));
    CHECK(shmbus_bus_close(bus));
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s ping|pong ROUNDS\n", argv[0]);
        return 2;
    }
    int ping = strcmp(argv[1], "ping") == 0;
    uint64_t rounds = strtoull(argv[2], NULL, 10);
    shmbus_bus *bus;
    CHECK(shmbus_connect(&bus));
    if (strcmp(argv[1], "calls") == 0) {
        return calls(bus, rounds);
    }
    shmbus_topic_options options;
    CHECK(shmbus_topic_options_init(&options));
    options.slot_size = SIZE;
    options.capacity = 16;
    shmbus_publisher *pub;
    shmbus_subscriber *sub;
    CHECK(shmbus_publisher_open(bus, ping ? "bench/ffi/ping" : "bench/ffi/pong",
                                SHMBUS_OPEN_OR_CREATE, NULL, &options, &pub));
    CHECK(shmbus_subscriber_open(bus, ping ? "bench/ffi/pong" : "bench/ffi/ping",
                                 SHMBUS_OPEN_OR_CREATE, NULL, &options, &sub));
    CHECK(shmbus_publisher_set_wait(pub, SHMBUS_WAIT_BUSY_POLL));
    CHECK(shmbus_subscriber_set_wait(sub, SHMBUS_WAIT_BUSY_POLL));
    uint64_t total = rounds + WARMUP;
    uint64_t *rtt = ping ? calloc(rounds, sizeof *rtt) : NULL;
    if (!ping) {
        printf("ready\n");
        fflush(stdout);
    }
    for (uint64_t i = 0; i < total; i++) {
        uint8_t *data;
        size_t capacity;
        shmbus_sample sample;
        if (ping) {
            uint64_t t0 = now_ns();
            CHECK(shmbus_publisher_loan(pub, &data, &capacity));
            memset(data, 0, SIZE);
            memcpy(data, &i, sizeof i);
            CHECK(shmbus_publisher_set_len(pub, SIZE));
            CHECK(shmbus_publisher_send(pub, NULL));
            CHECK(shmbus_subscriber_recv(sub, &sample));
            uint64_t echoed;
            memcpy(&echoed, sample.data, sizeof echoed);
            CHECK(shmbus_subscriber_release(sub));
            if (echoed != i || sample.len != SIZE) {
                fprintf(stderr, "echo %llu for %llu\n", (unsigned long long)echoed,
                        (unsigned long long)i);
                return 1;
            }
            if (i >= WARMUP) {
                rtt[i - WARMUP] = now_ns() - t0;
            }
        } else {
            CHECK(shmbus_subscriber_recv(sub, &sample));
            CHECK(shmbus_publisher_loan(pub, &data, &capacity));
            memcpy(data, sample.data, sample.len);
            CHECK(shmbus_publisher_set_len(pub, sample.len));
            CHECK(shmbus_subscriber_release(sub));
            CHECK(shmbus_publisher_send(pub, NULL));
        }
    }
    if (ping) {
        qsort(rtt, rounds, sizeof *rtt, cmp);
        printf("p50_ns=%llu p99_ns=%llu\n", (unsigned long long)rtt[rounds / 2],
               (unsigned long long)rtt[rounds * 99 / 100]);
        free(rtt);
    }
    CHECK(shmbus_publisher_close(pub));
    CHECK(shmbus_subscriber_close(sub));
    CHECK(shmbus_bus_close(bus));
    return 0;
}
