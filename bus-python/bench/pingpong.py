"""Python ping-pong: shmbus against multiprocessing (Pipe; shared_memory with a Queue), a Unix
socket, and Zenoh's Python package (if installed). Two processes; the parent sends a message,
the child echoes it, the parent times the round trip. Reports the one-way latency (RTT/2)
p50 and p99 per transport and size, and each transport's p50 as a ratio of shmbus's.

    target/venv/bin/python bus-python/bench/pingpong.py [--rounds 20000] [--sizes 64,1048576]
"""

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time

WARMUP = 200


def summarize(name, size, rtts):
    rtts.sort()
    p50 = rtts[len(rtts) // 2] / 2
    p99 = rtts[int(len(rtts) * 0.99)] / 2
    return {"transport": name, "size": size, "p50_ns": p50, "p99_ns": p99, "n": len(rtts)}


def timed(rounds, roundtrip):
    for _ in range(WARMUP):
        roundtrip()
    rtts = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        t0 = clock()
        roundtrip()
        rtts.append(clock() - t0)
    return rtts


# --- shmbus -----------------------------------------------------------------------------

def shmbus_child(socket_path, size, wait, rounds, ready):
    os.environ["SHMBUS_SOCKET"] = socket_path
    import shmbus

    bus = shmbus.Bus.connect()
    sub = bus.subscriber("bench/ping", how="open", wait=wait)
    pub = bus.publisher("bench/pong", slot_size=size, capacity=4, how="open", wait=wait)
    ready.set()
    for _ in range(rounds + WARMUP):
        pub.publish(sub.recv())   # slot to slot; the sample is released when it is dropped


def shmbus_run(size, rounds, wait):
    import shmbus

    bus = shmbus.Bus.embedded()
    ping = bus.publisher("bench/ping", slot_size=size, capacity=4, wait=wait)
    pong = bus.subscriber("bench/pong", how="create", slot_size=size, capacity=4, wait=wait)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=shmbus_child, args=(bus.socket_path, size, wait, rounds, ready))
    child.start()
    ready.wait()
    payload = bytes(size)

    def roundtrip():
        ping.publish(payload)
        pong.recv()               # dropped at once: its slot is released

    rtts = timed(rounds, roundtrip)
    child.join()
    return rtts


# --- multiprocessing.Pipe ----------------------------------------------------------------

def pipe_child(conn, rounds):
    for _ in range(rounds + WARMUP):
        conn.send_bytes(conn.recv_bytes())


def pipe_run(size, rounds):
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    child = ctx.Process(target=pipe_child, args=(b, rounds))
    child.start()
    payload = bytes(size)

    def roundtrip():
        a.send_bytes(payload)
        a.recv_bytes()

    rtts = timed(rounds, roundtrip)
    child.join()
    return rtts


# --- multiprocessing.shared_memory with a Queue -------------------------------------------

def shm_child(ping_name, pong_name, size, q_in, q_out, rounds):
    from multiprocessing import shared_memory

    ping = shared_memory.SharedMemory(name=ping_name)
    pong = shared_memory.SharedMemory(name=pong_name)
    for _ in range(rounds + WARMUP):
        q_in.get()
        pong.buf[:size] = ping.buf[:size]
        q_out.put(1)
    ping.close()
    pong.close()


def shm_queue_run(size, rounds):
    from multiprocessing import shared_memory

    ctx = mp.get_context("spawn")
    ping = shared_memory.SharedMemory(create=True, size=size)
    pong = shared_memory.SharedMemory(create=True, size=size)
    q_in, q_out = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=shm_child, args=(ping.name, pong.name, size, q_in, q_out, rounds))
    child.start()
    payload = bytes(size)

    def roundtrip():
        ping.buf[:size] = payload
        q_in.put(1)
        q_out.get()
        bytes(pong.buf[:size])

    try:
        return timed(rounds, roundtrip)
    finally:
        child.join()
        for s in (ping, pong):
            s.close()
            s.unlink()


# --- a Unix stream socket ---------------------------------------------------------------

def recv_exact(sock, n, buf):
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:n])
        if k == 0:
            raise EOFError
        got += k


def unix_child(sock, size, rounds):
    buf = bytearray(size)
    for _ in range(rounds + WARMUP):
        recv_exact(sock, size, buf)
        sock.sendall(buf)


def unix_run(size, rounds):
    ctx = mp.get_context("spawn")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = ctx.Process(target=unix_child, args=(b, size, rounds))
    child.start()
    payload = bytes(size)
    buf = bytearray(size)

    def roundtrip():
        a.sendall(payload)
        recv_exact(a, size, buf)

    rtts = timed(rounds, roundtrip)
    child.join()
    return rtts


# --- Zenoh (eclipse-zenoh), peer to peer over TCP loopback --------------------------------

def zenoh_config(zenoh, listen=None, connect=None):
    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("scouting/multicast/enabled", "false")
    if listen:
        conf.insert_json5("listen/endpoints", f'["{listen}"]')
    if connect:
        conf.insert_json5("connect/endpoints", f'["{connect}"]')
    return conf


def zenoh_child(endpoint, rounds, ready):
    import zenoh

    session = zenoh.open(zenoh_config(zenoh, connect=endpoint))
    pong = session.declare_publisher("bench/pong")
    sub = session.declare_subscriber("bench/ping")
    ready.set()
    for _ in range(rounds + WARMUP):
        pong.put(sub.recv().payload)
    time.sleep(0.5)
    session.close()


def zenoh_run(size, rounds):
    import zenoh

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp/127.0.0.1:{port}"
    session = zenoh.open(zenoh_config(zenoh, listen=endpoint))
    ping = session.declare_publisher("bench/ping")
    sub = session.declare_subscriber("bench/pong")
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=zenoh_child, args=(endpoint, rounds, ready))
    child.start()
    ready.wait()
    time.sleep(1.0)  # let the peers' declarations meet
    payload = bytes(size)

    def roundtrip():
        ping.put(payload)
        sub.recv().payload.to_bytes()

    try:
        return timed(rounds, roundtrip)
    finally:
        child.join()
        session.close()


def transports(names):
    available = {
        "shmbus (busy-poll)": lambda size, n: shmbus_run(size, n, "busy"),
        "shmbus (adaptive)": lambda size, n: shmbus_run(size, n, "adaptive"),
        "multiprocessing Pipe": pipe_run,
        "shared_memory + Queue": shm_queue_run,
        "Unix stream socket": unix_run,
    }
    try:
        import zenoh  # noqa: F401

        available["eclipse-zenoh"] = zenoh_run
    except ImportError:
        print("eclipse-zenoh is not installed: left out", file=sys.stderr)
    return {k: v for k, v in available.items() if not names or any(n in k for n in names)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--big-rounds", type=int, default=2000, help="rounds at sizes > 64 KiB")
    parser.add_argument("--sizes", default="64,1048576")
    parser.add_argument("--only", action="append", default=[], help="transports whose name holds this")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, pid {os.getpid()}")
    for size in (int(s) for s in args.sizes.split(",")):
        rounds = args.rounds if size <= 65536 else args.big_rounds
        results = []
        for name, run in transports(args.only).items():
            results.append(summarize(name, size, run(size, rounds)))
        base = next((r["p50_ns"] for r in results if r["transport"].startswith("shmbus (busy")), None)
        others = [r["p50_ns"] for r in results if not r["transport"].startswith("shmbus")]
        print(f"\n{size} B, {rounds} round trips each; one-way = RTT/2")
        print(f"| transport | one-way p50 | one-way p99 | p50 vs shmbus busy-poll |")
        print(f"| --- | --- | --- | --- |")
        for r in results:
            ratio = f"{r['p50_ns'] / base:.1f}x" if base else "-"
            print(f"| {r['transport']} | {r['p50_ns'] / 1000:.2f} us | {r['p99_ns'] / 1000:.2f} us | {ratio} |")
        if base and others:
            best = min(others)
            print(f"shmbus busy-poll p50 / best other p50 = {base / best:.3f}")
            adaptive = next((r["p50_ns"] for r in results if "adaptive" in r["transport"]), None)
            if adaptive:
                print(f"shmbus adaptive p50 / best other p50 = {adaptive / best:.3f}")


if __name__ == "__main__":
    main()
