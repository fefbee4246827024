// pubsub.cpp: the C API from C++, with small RAII owners; a byte topic of text messages.
//
//   pubsub_cpp sub TOPIC COUNT   print each message received, then "received COUNT"
//   pubsub_cpp pub TOPIC COUNT   publish "message 0" .. "message COUNT-1"
//
// Connects to the daemon at $SHMBUS_SOCKET (or the default socket). Build:
//   c++ -std=c++17 -Wall -I bus-ffi/include bus-ffi/examples/pubsub.cpp
//       target/debug/libshmbus.a -lpthread -ldl -lm -o pubsub_cpp
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

#include "shmbus.h"

namespace {

void check(shmbus_status s, const char* what) {
    if (s != SHMBUS_OK) {
        throw std::runtime_error(std::string(what) + ": " + shmbus_status_name(s) + ": " +
                                 shmbus_last_error_message());
    }
}

template <typename T, shmbus_status (*Close)(T*)>
struct Closer {
    void operator()(T* p) const { Close(p); }
};
using Bus = std::unique_ptr<shmbus_bus, Closer<shmbus_bus, shmbus_bus_close>>;
using Publisher =
    std::unique_ptr<shmbus_publisher, Closer<shmbus_publisher, shmbus_publisher_close>>;
using Subscriber =
    std::unique_ptr<shmbus_subscriber, Closer<shmbus_subscriber, shmbus_subscriber_close>>;

// A received message, released when it goes out of scope.
class Sample {
public:
    Sample(shmbus_subscriber* sub, uint64_t timeout_us) : sub_(sub) {
        check(shmbus_subscriber_recv_timeout(sub, timeout_us, &sample_), "recv");
    }
    ~Sample() { shmbus_subscriber_release(sub_); }
    Sample(const Sample&) = delete;
    Sample& operator=(const Sample&) = delete;
    std::string text() const {
        return std::string(reinterpret_cast<const char*>(sample_.data), sample_.len);
    }
    uint64_t sequence() const { return sample_.sequence; }

private:
    shmbus_subscriber* sub_;
    shmbus_sample sample_{};
};

int run(const std::string& role, const char* topic, unsigned long count) {
    shmbus_bus* raw_bus = nullptr;
    check(shmbus_connect(&raw_bus), "connect");
    Bus bus(raw_bus);
    shmbus_topic_options options;
    check(shmbus_topic_options_init(&options), "options");
    options.slot_size = 256;
    options.capacity = 8;
    if (role == "pub") {
        shmbus_publisher* raw = nullptr;
        check(shmbus_publisher_open(bus.get(), topic, SHMBUS_OPEN_OR_CREATE, nullptr, &options,
                                    &raw),
              "open publisher");
        Publisher pub(raw);
        for (unsigned long i = 0; i < count; i++) {
            std::string text = "message " + std::to_string(i);
            uint8_t* data = nullptr;
            size_t capacity = 0;
            check(shmbus_publisher_loan(pub.get(), &data, &capacity), "loan");
            text.copy(reinterpret_cast<char*>(data), capacity);
            check(shmbus_publisher_set_len(pub.get(), text.size()), "set_len");
            check(shmbus_publisher_send(pub.get(), nullptr), "send");
        }
        std::printf("sent %lu\n", count);
        return 0;
    }
    shmbus_subscriber* raw = nullptr;
    check(shmbus_subscriber_open(bus.get(), topic, SHMBUS_OPEN_OR_CREATE, nullptr, &options, &raw),
          "open subscriber");
    Subscriber sub(raw);
    std::printf("ready\n");
    std::fflush(stdout);
    for (unsigned long i = 0; i < count; i++) {
        Sample sample(sub.get(), 10'000'000);
        std::printf("%llu %s\n", static_cast<unsigned long long>(sample.sequence()),
                    sample.text().c_str());
    }
    std::printf("received %lu\n", count);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s pub|sub TOPIC COUNT\n", argv[0]);
        return 2;
    }
    try {
        return run(argv[1], argv[2], std::strtoul(argv[3], nullptr, 10));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
