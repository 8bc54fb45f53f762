"""moto's server mode on loopback, for the ec2 IaaS tests: an EC2 Query API
that keeps instances in memory. Prints `LISTENING <port>` once it answers
and has run one instance (in another region, terminated at once: moto
loads its instance types and images on the first RunInstances, seconds on
a busy machine, which a test's outbound deadline would otherwise
pay), then serves until killed."""

import argparse
import socket
import sys
import time

import boto3
from moto.server import ThreadedMotoServer


def warm_up(port):
    ec2 = boto3.client(
        "ec2",
        region_name="eu-west-3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="AKIDWARMUP",
        aws_secret_access_key="warm-up",
    )
    made = ec2.run_instances(ImageId="ami-12345678", InstanceType="t3.nano", MinCount=1, MaxCount=1)
    ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in made["Instances"]])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    port = args.port
    if port == 0:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    warm_up(port)
    print(f"LISTENING {port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
