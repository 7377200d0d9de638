#!/usr/bin/env python3
"""Memory at scale (README, Performance): SITES sites each sending MINUTES readings a
minute apart (the last MINUTES minutes, so nothing is in the future), compressed in
time: published at QoS 1 as fast as the broker takes them, site after site within each
minute, round-robin over PUBLISHERS connections.

Usage: publish.py PORT SITES MINUTES [PUBLISHERS]
Prints the messages acknowledged and the seconds it took.
"""

import sys
import threading
import time

import paho.mqtt.client as mqtt

port, sites, minutes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
publishers = int(sys.argv[4]) if len(sys.argv) > 4 else 4
now_min = int(time.time()) // 60 * 60 * 1000
total = sites * minutes
acked = 0
lock = threading.Lock()
done = threading.Event()


def on_publish(client, userdata, mid, reason, properties):
    global acked
    with lock:
        acked += 1
        if acked == total:
            done.set()


clients = []
for i in range(publishers):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"scale-{i}")
    c.on_publish = on_publish
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port, keepalive=120)
    c.loop_start()
    clients.append(c)

t0 = time.time()
k = 0
for m in range(minutes):
    ts = now_min - (minutes - m) * 60_000
    for s in range(sites):
        pm25 = 20 + (s * 7 + m) % 60
        payload = f'{{"ts":{ts},"pm25":{pm25},"pm10":{pm25 * 1.8:.1f},"interval_secs":60}}'
        clients[k % publishers].publish(f"aq/s{s:05d}/readings", payload, qos=1)
        k += 1
done.wait(timeout=3600)
print(f"{acked} acknowledged in {time.time() - t0:.1f} s", flush=True)
for c in clients:
    c.loop_stop()
    c.disconnect()
