"""Encrypted envelope (Messages.encrypted.aes256cbc_sha512)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from conftest import DAEMON_REVISION, Api
from interop_wire import (PayloadError, framed_blocks, quirk_open, quirk_seal,
                          textbook_cbc_seal)

KEY = os.urandom(32)


@pytest.fixture(scope="module")
def keyed(start_daemon):
    return start_daemon(key=KEY, name="bfd-keyed")


@pytest.fixture(scope="module")
def kapi(pb, keyed):
    return Api(pb, keyed)


def _encrypted_request(pb, payload: bytes) -> bytes:
    ms = pb.Messages()
    ms.encrypted.aes256cbc_sha512 = payload
    return ms.SerializeToString()


# -- the payload cipher itself (no daemon) ----------------------------------

def test_cipher_self_check():
    plain = b"hello butterfly" * 5
    iv = os.urandom(16)
    sealed = quirk_seal(KEY, plain, iv)
    assert sealed[:16] == iv
    assert (len(sealed) - 16) % 16 == 0
    assert quirk_open(KEY, sealed) == plain
    # The block-by-block writer equals a whole-buffer CBC decryption of the framed blocks.
    dec = Cipher(algorithms.AES(KEY), modes.CBC(iv)).decryptor()
    assert sealed[16:] == dec.update(framed_blocks(plain)) + dec.finalize()
    # Padding is 1..16 bytes computed on the plain text only.
    for n in range(0, 33):
        p = bytes(range(n))
        assert len(framed_blocks(p)) == 64 + n + (16 - n % 16)
        assert quirk_open(KEY, quirk_seal(KEY, p)) == p
    # Textbook CBC is a different payload and does not open.
    with pytest.raises(PayloadError):
        quirk_open(KEY, textbook_cbc_seal(KEY, plain, iv))


# -- against the daemon -----------------------------------------------------

def test_encrypted_request_accepted(kapi: Api, pb):
    inner = kapi.messages(
        kapi.message(message_id="enc-1", app_status=True),
        kapi.message(message_id="enc-2", nic_list=True),
    ).SerializeToString()
    raw = kapi.send_raw(_encrypted_request(pb, quirk_seal(KEY, inner)))
    reply = kapi.parse_messages(raw)
    assert len(reply.messages) == 0, "an encrypted reply must not carry clear messages"
    assert reply.HasField("encrypted")
    assert not reply.encrypted.HasField("error"), reply.encrypted
    assert reply.encrypted.HasField("aes256cbc_sha512")

    opened = quirk_open(KEY, reply.encrypted.aes256cbc_sha512)
    inner_reply = kapi.parse_messages(opened)
    assert not inner_reply.HasField("encrypted")
    assert [m.message_0.message_id for m in inner_reply.messages] == ["enc-1", "enc-2"]
    for m in inner_reply.messages:
        assert m.revision == DAEMON_REVISION
        assert m.message_0.response.status.status is True
    assert inner_reply.messages[0].message_0.response.app_status.graph_dot.startswith("digraph")


def test_encrypted_nic_add_applies(kapi: Api, pb, keyed, uid):
    nic_id = f"enc{uid}"
    nic = kapi.nic(nic_id, "52:54:00:aa:bb:cc", 9)
    inner = kapi.messages(kapi.message(nic_add=nic), kapi.message(nic_details=nic_id))
    raw = kapi.send_raw(_encrypted_request(pb, quirk_seal(KEY, inner.SerializeToString())))
    reply = kapi.parse_messages(quirk_open(KEY, kapi.parse_messages(raw).encrypted.aes256cbc_sha512))
    add, details = (m.message_0.response for m in reply.messages)
    assert add.status.status is True
    assert add.nic_add.path == f"{keyed.socket_dir}/qemu-vhost-{nic_id}"
    assert [n.id for n in details.nic_details] == [nic_id]


def test_textbook_cbc_rejected(kapi: Api, pb):
    inner = kapi.messages(kapi.message(app_status=True)).SerializeToString()
    reply = kapi.parse_messages(kapi.send_raw(_encrypted_request(pb, textbook_cbc_seal(KEY, inner))))
    assert len(reply.messages) == 0
    assert reply.HasField("encrypted")
    assert not reply.encrypted.HasField("aes256cbc_sha512")
    assert reply.encrypted.error.code == pb.Encrypted.Error.REJECTED


def test_wrong_key_rejected(kapi: Api, pb):
    other = os.urandom(32)
    assert other != KEY
    inner = kapi.messages(kapi.message(app_status=True)).SerializeToString()
    reply = kapi.parse_messages(kapi.send_raw(_encrypted_request(pb, quirk_seal(other, inner))))
    assert len(reply.messages) == 0
    assert reply.encrypted.error.code == pb.Encrypted.Error.REJECTED


def test_clear_request_to_keyed_daemon_rejected(kapi: Api, pb):
    reply = kapi.send(kapi.messages(kapi.message(app_status=True)))
    assert not reply.HasField("encrypted")
    assert len(reply.messages) == 1
    m = reply.messages[0]
    assert m.revision == DAEMON_REVISION
    assert m.error.code == pb.Error.REJECTED
    assert not m.HasField("message_0")


def test_encrypted_request_to_unkeyed_daemon_rejected(api: Api, pb):
    inner = api.messages(api.message(app_status=True)).SerializeToString()
    reply = api.parse_messages(api.send_raw(_encrypted_request(pb, quirk_seal(KEY, inner))))
    assert not reply.HasField("encrypted")
    assert len(reply.messages) == 1
    m = reply.messages[0]
    assert m.revision == DAEMON_REVISION
    assert m.error.code == pb.Error.REJECTED
    assert not m.HasField("message_0")
