"""Sends a SYN carrying an HTTP request from a raw socket and prints what the server
answers, before and after the client's ACK. Usage: syn_data.py ACK_AFTER_S [no-ack] [dup]
[win=N] (the SYN's window field, 64240 unless given)."""
import random, select, socket, struct, sys, time

SRC, DST, DPORT = "198.18.200.2", "198.18.200.1", 80
REQ = b"GET /index.html HTTP/1.1\r\nHost: be\r\nConnection: close\r\n\r\n"

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

sport, isn = random.randint(20000, 60000), random.randint(0, 2**32 - 1)

SYN_WINDOW = int(next((a[4:] for a in sys.argv if a.startswith("win=")), "64240"))

def seg(seq, ack, flags, payload=b"", opts=b"", window=64240):
    doff = (20 + len(opts)) // 4
    h = struct.pack("!HHIIBBHHH", sport, DPORT, seq, ack, doff << 4, flags, window, 0, 0) + opts
    ph = socket.inet_aton(SRC) + socket.inet_aton(DST) + struct.pack("!BBH", 0, 6, len(h) + len(payload))
    c = csum(ph + h + payload)
    return h[:16] + struct.pack("!H", c) + h[18:] + payload

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
t0 = time.time()
def collect(until):
    got = []
    while True:
        left = until - time.time()
        if left <= 0: return got
        r, _, _ = select.select([s], [], [], left)
        if not r: continue
        pkt = s.recv(65535)
        ihl = (pkt[0] & 15) * 4
        sp, dp, seq, ack, off, fl = struct.unpack("!HHIIBB", pkt[ihl:ihl + 14])
        if dp != sport: continue
        data = pkt[ihl + (off >> 4) * 4:]
        names = "".join(n for b, n in [(2, "S"), (16, "."), (8, "P"), (1, "F"), (4, "R")] if fl & b)
        print("  %6.3f s  server: %-4s seq=%d ack=isn+%d len=%d %r" % (time.time() - t0, names, seq, (ack - isn) % 2**32, len(data), data[:40]))
        got.append((fl, seq, ack, data))

print("client: SYN isn=%d with %d bytes of request" % (isn, len(REQ)))
s.sendto(seg(isn, 0, 0x02, REQ, opts=bytes([2, 4, 5, 0xb4]), window=SYN_WINDOW), (DST, 0))
ack_after = float(sys.argv[1])
got = collect(time.time() + ack_after)
if "dup" in sys.argv:
    print("client: the same SYN again")
    s.sendto(seg(isn, 0, 0x02, REQ, opts=bytes([2, 4, 5, 0xb4]), window=SYN_WINDOW), (DST, 0))
    got += collect(time.time() + ack_after)
if "no-ack" not in sys.argv and got:
    synack = [g for g in got if g[0] & 0x12 == 0x12][0]
    isn_b = synack[1]
    nxt = (isn_b + 1 + sum(len(g[3]) for g in got if not g[0] & 2 and g[1] != isn_b)) % 2**32
    acked_req = (synack[2] - isn - 1) % 2**32
    rest = REQ[acked_req:]
    print("client: ACK ack=isn_b+%d, sending the %d request bytes the SYN/ACK did not acknowledge" % ((nxt - isn_b) % 2**32, len(rest)))
    s.sendto(seg((isn + 1 + acked_req) % 2**32, nxt, 0x10 | (0x08 if rest else 0), rest), (DST, 0))
    collect(time.time() + 2.5)
