#!/usr/bin/python3
"""Writes the seed corpora of the fabric fuzz targets:
tests/fuzz/corpus/fuzz_fabric_desc/ (descriptors, valid and broken) and
tests/fuzz/corpus/fuzz_fabric_tcp/ (tcp transport streams). Run from the
repository root: /usr/bin/python3 tests/fuzz/gen_fabric_corpus.py
The formats are in docs/fabric.md; tokens use the fuzz target's secret."""
import os
import struct

M = 0xffffffffffffffff


def rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & M


def siphash(key, msg):
    k0, k1 = struct.unpack('<QQ', key)
    v = [0x736f6d6570736575 ^ k0, 0x646f72616e646f6d ^ k1, 0x6c7967656e657261 ^ k0, 0x7465646279746573 ^ k1]

    def rnd():
        v[0] = (v[0] + v[1]) & M; v[1] = rotl(v[1], 13); v[1] ^= v[0]; v[0] = rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & M; v[3] = rotl(v[3], 16); v[3] ^= v[2]
        v[0] = (v[0] + v[3]) & M; v[3] = rotl(v[3], 21); v[3] ^= v[0]
        v[2] = (v[2] + v[1]) & M; v[1] = rotl(v[1], 17); v[1] ^= v[2]; v[2] = rotl(v[2], 32)
    n = len(msg) // 8 * 8
    for i in range(0, n, 8):
        m = struct.unpack('<Q', msg[i:i + 8])[0]
        v[3] ^= m; rnd(); rnd(); v[0] ^= m
    b = ((len(msg) << 56) & M) | int.from_bytes(msg[n:], 'little')
    v[3] ^= b; rnd(); rnd(); v[0] ^= b; v[2] ^= 0xff
    for _ in range(4):
        rnd()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


SECRET = b'secret' + bytes(10)
RID = 0x10001


def token(region, addr, ln):
    return siphash(SECRET, struct.pack('<IQQ', region, addr, ln))


def blob(b):
    return struct.pack('<I', len(b)) + b


def s(t):
    return blob(t.encode())


def u8(x): return struct.pack('<B', x)
def u16(x): return struct.pack('<H', x)
def u32(x): return struct.pack('<I', x)
def u64(x): return struct.pack('<Q', x)


# ---- descriptors ----
def desc(addrs=None, keys=None, blocks=None, base=0x7f0000000000, ln=1 << 20, mem=0, ver=1, region=0x20003,
         name='prefill-0', count=None):
    addrs = addrs if addrs is not None else [(1, s('10.0.0.1:7800'))]
    keys = keys if keys is not None else []
    blocks = blocks if blocks is not None else [(base, 4096, 77)]
    out = b'KD' + u8(ver) + bytes(range(16)) + s(name) + u64(1) + u64(2) + u64(3)
    out += u8(len(addrs)) + b''.join(u8(t) + blob(a) for t, a in addrs)
    out += u32(region) + u8(mem) + u64(base) + u64(ln)
    out += u8(len(keys)) + b''.join(u8(t) + u64(k) + blob(x) for t, k, x in keys)
    out += u32(len(blocks) if count is None else count)
    out += b''.join(u64(a) + u64(l) + u64(t) for a, l, t in blocks)
    return out


def write(dirname, name, data):
    os.makedirs(dirname, exist_ok=True)
    with open(os.path.join(dirname, name), 'wb') as f:
        f.write(data)


D = 'tests/fuzz/corpus/fuzz_fabric_desc'
B = 0x7f0000000000
shm = s('kvf-fabric-00112233') + u32(4242)
ofi = s('tcp;ofi_rxm') + u32(5) + u8(0) + blob(b'\x02\x00\x1f\x90\x7f\x00\x00\x01' + bytes(8))
verbs = u8(2) + s('192.168.1.10:4791') + s('192.168.2.10:4792')
rkeys = u8(2) + u32(0x1234) + u32(0x5678)
cuda = bytes(64) + u64(B) + u64(1 << 20) + u32(0)
write(D, 'tcp_one_block', desc())
write(D, 'all_transports', desc(addrs=[(1, s('10.0.0.1:7800')), (2, shm), (3, verbs), (4, ofi), (5, u32(0))],
                                keys=[(2, 1, b''), (3, 0x1234, rkeys), (4, 0xabcdef, b''), (5, B, cuda)]))
write(D, 'many_blocks', desc(blocks=[(B + i * 4096, 4096, i) for i in range(64)]))
write(D, 'cuda_region', desc(mem=1, addrs=[(5, u32(0))], keys=[(5, B, cuda)]))
write(D, 'verbs_bad_rkeys', desc(addrs=[(3, verbs)], keys=[(3, 1, u8(3) + u32(1))]))
write(D, 'verbs_zero_dev', desc(addrs=[(3, u8(0))], keys=[(3, 1, rkeys)]))
write(D, 'ofi_bad_virt', desc(addrs=[(4, s('efa') + u32(1) + u8(7) + blob(b'x'))]))
good = desc()
write(D, 'truncated_head', good[:20])
write(D, 'truncated_blocks', good[:-5])
write(D, 'trailing', good + b'\x00')
write(D, 'bad_magic', b'XD' + good[2:])
write(D, 'bad_version', good[:2] + u8(2) + good[3:])
write(D, 'block_outside', desc(blocks=[(B + (1 << 20) - 10, 100, 1)]))
write(D, 'block_before', desc(blocks=[(B - 1, 100, 1)]))
write(D, 'block_wraps', desc(blocks=[(M - 10, 100, 1)], base=M - 1000, ln=500))
write(D, 'region_wraps', desc(base=M - 10, ln=100, blocks=[(M - 5, 1, 1)]))
write(D, 'zero_blocks', desc(blocks=[]))
write(D, 'zero_len_block', desc(blocks=[(B, 0, 1)]))
write(D, 'count_too_big', desc(count=0xffffffff))
write(D, 'count_mismatch', desc(count=5))
write(D, 'dup_transport', desc(addrs=[(1, s('a:1')), (1, s('b:2'))]))
write(D, 'unknown_transport', desc(addrs=[(9, s('x'))]))
write(D, 'dup_key', desc(keys=[(4, 1, b''), (4, 2, b'')]))
write(D, 'empty_addr', desc(addrs=[(1, b'')]))
write(D, 'unknown_mem', desc(mem=3))
write(D, 'long_name', desc(name='n' * 100))
write(D, 'empty', b'')

# ---- tcp streams ----
T = 'tests/fuzz/corpus/fuzz_fabric_tcp'


def frame(typ, rid, payload, ver=1, length=None):
    return b'KF' + u8(ver) + u8(typ) + u16(0) + u16(0) + u32(rid) + u32(len(payload) if length is None else length) + payload


def access(addr, ln, blk, blen, tok=None, region=RID):
    return u32(region) + u64(addr) + u64(ln) + u64(blk) + u64(blen) + u64(token(region, blk, blen) if tok is None else tok)


hello = frame(0x01, 0, bytes(16) + s('decode-0') + bytes(16))
rd = frame(0x02, 1, access(4096 + 100, 500, 4096, 4096))
wr_data = bytes(range(256)) * 4
wr = frame(0x03, 2, access(8192, 1024, 8192, 4096) + wr_data)
big = bytes(40000)
wr_big = frame(0x03, 3, access(16384, len(big), 16384, 49152) + big)
notify = frame(0x04, 4, blob(b'blocks 3..9 ready'))
attach = frame(0x05, 5, u32(RID) + u64(0) + u64(4096) + u64(token(RID, 0, 4096)))
attach_ok = frame(0x85, 5, u32(RID) + u8(0) + u64(0) + u64(65536) + bytes(16) + u8(1) + u8(4) + u64(9) + blob(b''))
err = frame(0x7f, 6, u32(0xfffffff2) + s('bad access token'))
write(T, 'hello_read', b'\x01' + hello + rd)
write(T, 'write_small', b'\x07' + hello + wr)
write(T, 'write_big_direct', b'\x03' + hello + wr_big)
write(T, 'notify_attach', b'\x05' + hello + notify + attach)
write(T, 'replies', b'\x09' + attach_ok + err + frame(0x83, 2, b'') + frame(0x84, 4, b'') +
      frame(0x81, 0, bytes(16) + s('prefill-0')))
write(T, 'read_data', b'\x0b' + frame(0x82, 1, bytes(3000)))
write(T, 'write_bad_token', b'\x02' + hello + frame(0x03, 2, access(8192, 1024, 8192, 4096, tok=1) + wr_data))
write(T, 'write_outside_block', b'\x04' + hello + frame(0x03, 2, access(8192, 5000, 8192, 4096) + bytes(5000)))
write(T, 'write_block_outside_region', b'\x04' + hello +
      frame(0x03, 2, access(65536 - 100, 100, 65536 - 100, 4096) + bytes(100)))
write(T, 'write_len_mismatch', b'\x06' + hello + frame(0x03, 2, access(8192, 2000, 8192, 4096) + bytes(1000)))
write(T, 'read_wrong_region', b'\x08' + hello + frame(0x02, 1, access(0, 10, 0, 4096, region=7)))
write(T, 'read_overflow', b'\x08' + hello + frame(0x02, 1, access(M - 5, 10, M - 10, 100)))
write(T, 'read_bad_len', b'\x01' + hello + frame(0x02, 1, access(0, 10, 0, 4096) + b'x'))
write(T, 'truncated', b'\x02' + hello + wr[:-100])
write(T, 'bad_magic', b'\x01' + b'GET / HTTP/1.1\r\n\r\n')
write(T, 'bad_version', b'\x01' + frame(0x01, 0, b'', ver=2))
write(T, 'ctrl_too_big', b'\x01' + frame(0x04, 1, bytes(3000)))
write(T, 'unknown_type', b'\x01' + frame(0x42, 1, b''))
write(T, 'huge_len', b'\x01' + frame(0x03, 1, access(0, 10, 0, 4096), length=0xfffffff0))
write(T, 'many_reads', b'\x0d' + hello + b''.join(frame(0x02, i, access(i * 256, 256, 0, 65536)) for i in range(40)))
write(T, 'empty', b'')
write(T, 'seed_only', b'\x01')
