"""A real S3-compatible server on loopback for tests/s3.rs: moto in server mode.

Usage: python moto_server.py PORT BUCKET
Prints "ready" once the bucket exists. Signals make the server go down and come back, as an
outage of a real store does, while its objects survive (they live in this process's memory):
  SIGUSR1  stop serving: the port closes, connections are refused
  SIGUSR2  serve again on the same port
  SIGTERM  exit
"""

import signal
import sys
import threading

import boto3
from moto.server import ThreadedMotoServer

port, bucket = int(sys.argv[1]), sys.argv[2]
state = {"server": None}
lock = threading.Lock()


def start():
    with lock:
        if state["server"] is None:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            state["server"] = server


def stop():
    with lock:
        if state["server"] is not None:
            state["server"].stop()
            state["server"] = None


start()
boto3.client(
    "s3",
    endpoint_url=f"http://127.0.0.1:{port}",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
    region_name="us-east-1",
).create_bucket(Bucket=bucket)
signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=stop).start())
signal.signal(signal.SIGUSR2, lambda *_: threading.Thread(target=start).start())
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
while True:
    signal.pause()
