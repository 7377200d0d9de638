#!/usr/bin/env python3
"""The peer in benches/pipeline.rs: an MQTT -> InfluxDB bridge as users typically write
it (paho-mqtt + influxdb-client, 5 000-point batches, no durability: paho acknowledges a
QoS 1 message when the callback returns, before anything is written).

Usage: bridge.py MQTT_PORT INFLUX_URL N
Prints "subscribed" once subscribed, then after N messages, once every point is written
(the write API closed and flushed): "done CPU_SECONDS PEAK_RSS_MIB".
"""

import json
import resource
import sys

import paho.mqtt.client as mqtt
from influxdb_client import InfluxDBClient, Point, WriteOptions, WritePrecision

port, url, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
influx = InfluxDBClient(url=url, token="bench", org="aq")
writes = influx.write_api(write_options=WriteOptions(batch_size=5000, flush_interval=1000))
seen = 0


def on_connect(client, userdata, flags, reason, properties):
    client.subscribe("aq/+/readings", qos=1)


def on_subscribe(client, userdata, mid, reasons, properties):
    print("subscribed", flush=True)


def on_message(client, userdata, msg):
    global seen
    site = msg.topic.split("/")[1]
    d = json.loads(msg.payload)
    p = Point("pm").tag("site", site).time(d["ts"], WritePrecision.MS)
    for key, field in (("pm25", "pm2_5"), ("pm10", "pm10")):
        if d.get(key) is not None:
            p = p.field(field, float(d[key]))
    writes.write(bucket="aq", record=p)
    seen += 1
    if seen == n:
        client.disconnect()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="py-bridge")
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.max_inflight_messages_set(1000)
client.connect("127.0.0.1", port, keepalive=60)
client.loop_forever()
writes.close()
influx.close()
u = resource.getrusage(resource.RUSAGE_SELF)
print(f"done {u.ru_utime + u.ru_stime:.3f} {u.ru_maxrss / 1024:.1f}", flush=True)
