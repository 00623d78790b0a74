"""Hand-written wire helpers for the interop suite.

Nothing here comes from the daemon's sources: a minimal protobuf wire-format
encoder/decoder (to check bytes independently of any protobuf library) and the
Butterfly `aes256cbc_sha512` payload cipher, built block by block on top of
`cryptography`'s raw AES (ECB mode, one 16-byte block at a time).
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterator, Tuple, Union

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# ---------------------------------------------------------------------------
# Protobuf wire format (varint / length-delimited only, which is all we need)
# ---------------------------------------------------------------------------

WT_VARINT = 0
WT_I64 = 1
WT_LEN = 2
WT_I32 = 5


def encode_varint(value: int) -> bytes:
    """Base-128 varint. Negative numbers are two's complement on 64 bits,
    as protobuf does for int32/int64 (hence always 10 bytes)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def tag(field: int, wire_type: int) -> bytes:
    return encode_varint((field << 3) | wire_type)


def field_varint(field: int, value: int) -> bytes:
    return tag(field, WT_VARINT) + encode_varint(value)


def field_bytes(field: int, value: Union[bytes, str]) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return tag(field, WT_LEN) + encode_varint(len(value)) + value


def iter_fields(data: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
    """Yield (field number, wire type, value) for every top-level field.
    Varints come back as unsigned ints, LEN fields as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire_type == WT_VARINT:
            value, pos = decode_varint(data, pos)
        elif wire_type == WT_LEN:
            length, pos = decode_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated length-delimited field")
            value = data[pos:pos + length]
            pos += length
        elif wire_type == WT_I64:
            value = data[pos:pos + 8]
            pos += 8
        elif wire_type == WT_I32:
            value = data[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield field, wire_type, value


def fields_of(data: bytes, field: int):
    """All values of one field number (with their wire types)."""
    return [(wt, v) for f, wt, v in iter_fields(data) if f == field]


def as_int32(unsigned_varint: int) -> int:
    """Interpret a decoded varint as protobuf int32 (low 32 bits, signed)."""
    low = unsigned_varint & 0xFFFFFFFF
    return low - (1 << 32) if low & 0x80000000 else low


# ---------------------------------------------------------------------------
# Butterfly aes256cbc_sha512 payload
# ---------------------------------------------------------------------------

BLOCK = 16
KEY_SIZE = 32
DIGEST_SIZE = 64


class PayloadError(Exception):
    pass


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


class _RawAES:
    """AES-256 single-block primitives (ECB on exactly one block)."""

    def __init__(self, key: bytes):
        if len(key) != KEY_SIZE:
            raise ValueError("AES-256 key must be 32 bytes")
        cipher = Cipher(algorithms.AES(key), modes.ECB())
        self._enc = cipher.encryptor()
        self._dec = cipher.decryptor()

    def encrypt_block(self, block: bytes) -> bytes:
        assert len(block) == BLOCK
        return self._enc.update(block)

    def decrypt_block(self, block: bytes) -> bytes:
        assert len(block) == BLOCK
        return self._dec.update(block)


def _blocks(data: bytes):
    assert len(data) % BLOCK == 0
    return [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)]


def pkcs7_pad_for(plain: bytes) -> bytes:
    """PKCS#7 padding computed on the plain text length only (1..16 bytes)."""
    n = BLOCK - (len(plain) % BLOCK)
    return bytes([n]) * n


def framed_blocks(plain: bytes) -> bytes:
    """SHA512(plain) || plain || padding: the block sequence both sides agree on."""
    return hashlib.sha512(plain).digest() + plain + pkcs7_pad_for(plain)


def quirk_seal(key: bytes, plain: bytes, iv: bytes | None = None) -> bytes:
    """Writer side: IV || X, X_i = D(P_i) XOR P_{i-1}, P_0 = IV
    (the CBC *decryption* transform applied to the framed plain text)."""
    if iv is None:
        iv = os.urandom(BLOCK)
    assert len(iv) == BLOCK
    aes = _RawAES(key)
    prev = iv
    out = bytearray(iv)
    for p in _blocks(framed_blocks(plain)):
        out += _xor(aes.decrypt_block(p), prev)
        prev = p
    return bytes(out)


def quirk_open(key: bytes, payload: bytes) -> bytes:
    """Reader side: P_i = E(X_i XOR P_{i-1}), P_0 = IV (the CBC *encryption*
    transform), then check padding and SHA-512; returns the plain text."""
    if len(payload) < BLOCK + DIGEST_SIZE + BLOCK or len(payload) % BLOCK:
        raise PayloadError(f"bad payload length {len(payload)}")
    aes = _RawAES(key)
    prev = payload[:BLOCK]
    data = bytearray()
    for x in _blocks(payload[BLOCK:]):
        p = aes.encrypt_block(_xor(x, prev))
        data += p
        prev = p
    n = data[-1]
    if not 1 <= n <= BLOCK or data[-n:] != bytes([n]) * n:
        raise PayloadError("bad padding")
    body = bytes(data[:-n])
    digest, plain = body[:DIGEST_SIZE], body[DIGEST_SIZE:]
    if len(digest) != DIGEST_SIZE or hashlib.sha512(plain).digest() != digest:
        raise PayloadError("SHA-512 mismatch")
    return plain


def textbook_cbc_seal(key: bytes, plain: bytes, iv: bytes | None = None) -> bytes:
    """IV || standard AES-256-CBC encryption of the same framed blocks
    (what a naive implementation would send; the daemon must reject it)."""
    if iv is None:
        iv = os.urandom(BLOCK)
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + enc.update(framed_blocks(plain)) + enc.finalize()
