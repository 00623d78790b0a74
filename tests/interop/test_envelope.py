"""Envelope rules: framing, revisions, parse errors, empty requests, batches."""

from __future__ import annotations

import pytest

from conftest import CLIENT_REVISION, DAEMON_REVISION, Api
from interop_wire import (WT_LEN, WT_VARINT, field_bytes, field_varint, fields_of,
                          iter_fields)


def assert_bare_parse_error(pb, raw: bytes):
    """The reply must be a bare proto.Message{revision, error{PARSE_ERROR}}, not a Messages."""
    # Wire-level: in a Message, field 1 is the varint `revision`; in a Messages it
    # would be the length-delimited `messages`.
    f1 = fields_of(raw, 1)
    assert [wt for wt, _ in f1] == [WT_VARINT], (
        f"reply is not a bare Message (field 1 should be one varint): {raw.hex()}")
    assert not fields_of(raw, 3), f"bare error reply must not carry message_0: {raw.hex()}"

    m = pb.Message()
    m.ParseFromString(raw)
    assert m.IsInitialized()
    assert m.revision >= 6
    assert m.HasField("error"), m
    assert m.error.HasField("code"), "error.code must be present on the wire"
    assert m.error.code == pb.Error.PARSE_ERROR
    assert not m.HasField("message_0")


def test_protoc_generated_modules(pb):
    assert pb.Messages.DESCRIPTOR.full_name == "proto.Messages"
    assert pb.MessageV0.DESCRIPTOR.full_name == "MessageV0"
    assert pb.Encrypted.DESCRIPTOR.full_name == "Encrypted"


def test_single_request_reply_revision_and_frame(api: Api):
    res = api.ok(app_status=True)
    assert res.HasField("app_status")


@pytest.mark.parametrize("revision", [CLIENT_REVISION, DAEMON_REVISION])
def test_request_revisions_6_and_7_accepted(api: Api, revision):
    reply = api.send(api.messages(api.message(revision=revision, nic_list=True)))
    assert len(reply.messages) == 1
    assert reply.messages[0].revision == DAEMON_REVISION
    assert reply.messages[0].message_0.response.status.status is True


def test_hand_encoded_request_and_reply(api: Api, pb):
    """Bytes built and decoded by hand, no protobuf library on either path."""
    request = field_varint(17, 1)                            # Request.app_status = true
    v0 = field_bytes(1, request) + field_bytes(3, "raw-id")   # MessageV0.request, .message_id
    message = field_varint(1, 6) + field_bytes(3, v0)       # Message.revision, .message_0
    frame = field_bytes(1, message)                         # Messages.messages[0]
    # The library must produce the same bytes for the same content.
    assert frame == api.messages(api.message(message_id="raw-id", app_status=True)).SerializeToString()

    raw = api.send_raw(frame)
    top = list(iter_fields(raw))
    msgs = [v for f, wt, v in top if f == 1 and wt == WT_LEN]
    assert len(msgs) == 1 and all(f == 1 for f, _, _ in top), raw.hex()
    rev = fields_of(msgs[0], 1)
    assert rev == [(WT_VARINT, DAEMON_REVISION)]
    (wt, v0_reply), = fields_of(msgs[0], 3)
    assert wt == WT_LEN
    assert fields_of(v0_reply, 3) == [(WT_LEN, b"raw-id")]
    (_, response), = fields_of(v0_reply, 2)
    (_, status), = fields_of(response, 1)
    assert fields_of(status, 1) == [(WT_VARINT, 1)]
    (_, app_status), = fields_of(response, 10)
    assert fields_of(app_status, 4)[0][1].startswith(b"digraph")


@pytest.mark.parametrize("garbage", [
    b"\xff\xff\xff\xff\xff",            # truncated varint tag
    b"\x0a\x10abc",                     # length-delimited field longer than the frame
    b"\x00\x01",                        # field number 0
    b"\x0f\x00",                        # wire type 7
    b"garbage, not protobuf at all \x80",
], ids=["truncated-varint", "overlong-len", "field-0", "wire-type-7", "text"])
def test_garbage_gives_bare_parse_error(api: Api, pb, garbage):
    assert_bare_parse_error(pb, api.send_raw(garbage))


def test_message_missing_revision_gives_parse_error(api: Api, pb):
    m = pb.Message()
    m.message_0.request.app_status = True
    ms = pb.Messages()
    ms.messages.append(m)
    assert not ms.IsInitialized()
    raw = ms.SerializePartialToString()
    assert raw == field_bytes(1, field_bytes(3, field_bytes(1, field_varint(17, 1))))
    assert_bare_parse_error(pb, api.send_raw(raw))


def test_nic_missing_mac_gives_parse_error(api: Api, pb, uid):
    m = pb.Message(revision=CLIENT_REVISION)
    nic = m.message_0.request.nic_add
    nic.id = f"nomac{uid}"
    nic.vni = 42
    ms = pb.Messages()
    ms.messages.append(m)
    assert not ms.IsInitialized()
    assert_bare_parse_error(pb, api.send_raw(ms.SerializePartialToString()))
    # and nothing was created
    err = api.fails(nic_details=f"nomac{uid}")
    assert err.description == f"NIC: nomac{uid} not found"


def test_message_without_message_0_is_version_not_managed(api: Api, pb):
    reply = api.send(api.messages(pb.Message(revision=CLIENT_REVISION)))
    assert len(reply.messages) == 1
    m = reply.messages[0]
    assert m.revision == DAEMON_REVISION
    assert m.HasField("error") and m.error.HasField("code")
    assert m.error.code == pb.Error.VERSION_NOT_MANAGED
    assert not m.HasField("message_0")


def test_empty_messages_rejected(api: Api, pb):
    empty = pb.Messages().SerializeToString()
    assert empty == b""
    reply = api.parse_messages(api.send_raw(empty))
    assert not reply.HasField("encrypted")
    assert len(reply.messages) == 1
    m = reply.messages[0]
    assert m.revision == DAEMON_REVISION
    assert m.error.HasField("code")
    assert m.error.code == pb.Error.REJECTED
    assert not m.HasField("message_0")


def test_batch_order_and_message_ids(api: Api, pb, uid):
    ids = [f"first-{uid}", "", "  spaced \t id ", "ünïcødé-β-✓", "x" * 300]
    nic_id = f"batch{uid}"
    batch = api.messages(
        api.message(message_id=ids[0], nic_add=api.nic(nic_id, "52:54:00:00:00:01", 7)),
        api.message(message_id=ids[1], nic_details=nic_id),
        pb.Message(revision=CLIENT_REVISION),  # no message_0
        api.message(message_id=ids[2], nic_del=nic_id),
        api.message(message_id=ids[3], nic_details=nic_id),
        api.message(message_id=ids[4], app_status=True),
    )
    reply = api.send(batch)
    assert len(reply.messages) == 6
    assert all(m.revision == DAEMON_REVISION for m in reply.messages)

    add, details, nov0, delete, gone, status = reply.messages
    assert add.message_0.message_id == ids[0]
    assert add.message_0.response.status.status is True
    assert add.message_0.response.HasField("nic_add")

    assert details.message_0.HasField("message_id") and details.message_0.message_id == ""
    assert [n.id for n in details.message_0.response.nic_details] == [nic_id]

    assert nov0.error.code == pb.Error.VERSION_NOT_MANAGED and not nov0.HasField("message_0")

    assert delete.message_0.message_id == ids[2]
    assert delete.message_0.response.status.status is True

    assert gone.message_0.message_id == ids[3]
    assert gone.message_0.response.status.status is False
    assert gone.message_0.response.status.error.description == f"NIC: {nic_id} not found"

    assert status.message_0.message_id == ids[4]
    assert status.message_0.response.HasField("app_status")
