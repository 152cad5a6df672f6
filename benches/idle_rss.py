#!/usr/bin/env python3
# Idle keep-alive memory: opens N connections to a running server, one request each, keeps
# them open, and reports the growth of the server's RSS per connection.
#   target/release/readyserve --listen 127.0.0.1:7878 --access-log off --keep-alive-timeout 60 &
#   python3 benches/idle_rss.py 7878 $! 10000
import socket, sys, time, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])
req = b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n"
# warm up
s = socket.create_connection(("127.0.0.1", port)); s.sendall(req); s.recv(65536); s.close()
time.sleep(0.3)
before = rss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(req); socks.append(s)
for s in socks:
    got = b""
    while b"\r\n\r\n" not in got: got += s.recv(65536)
time.sleep(0.5)
after = rss()
print(f"RSS before {before} KiB, after {after} KiB with {n} idle keep-alive connections: {(after-before)*1024/n:.0f} bytes each")
