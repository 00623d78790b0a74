"""Security group requests, including the negative int32 `protocol` on the wire."""

from __future__ import annotations

from conftest import Api
from interop_wire import WT_LEN, WT_VARINT, as_int32, fields_of

MINUS_ONE_VARINT = b"\xff" * 9 + b"\x01"
PROTOCOL_TAG = b"\x10"  # Rule.protocol: field 2, wire type 0


def _reply_rules_raw(raw: bytes):
    """Walk Messages -> Message -> MessageV0 -> Response -> sg_rule_list by hand."""
    (_, message), = fields_of(raw, 1)
    (_, v0), = fields_of(message, 3)
    (_, response), = fields_of(v0, 2)
    return [v for wt, v in fields_of(response, 8) if wt == WT_LEN]


def test_sg_rule_any_protocol_minus_one(api: Api, pb, uid):
    sg = f"sg-any-{uid}"
    api.ok(sg_add=pb.MessageV0.Sg(id=sg))

    rule = api.rule(direction=pb.MessageV0.Rule.INBOUND, protocol=-1, cidr="0.0.0.0/0")
    add = api.messages(api.message(sg_rule_add=pb.MessageV0.SgRuleAddReq(sg_id=sg, rule=rule)))
    wire = add.SerializeToString()
    # int32 -1 is sign-extended to 64 bits: a 10-byte varint.
    assert PROTOCOL_TAG + MINUS_ONE_VARINT in wire
    reply = api.parse_messages(api.send_raw(wire))
    assert reply.messages[0].message_0.response.status.status is True

    list_req = api.messages(api.message(sg_rule_list=sg))
    raw = api.send_raw(list_req.SerializeToString())
    parsed = api.parse_messages(raw)
    res = parsed.messages[0].message_0.response
    assert res.status.status is True
    assert len(res.sg_rule_list) == 1
    r = res.sg_rule_list[0]
    assert r.protocol == -1
    assert r.direction == pb.MessageV0.Rule.INBOUND
    assert r.cidr.address == "0.0.0.0" and r.cidr.mask_size == 0

    # Same check without the protobuf library: the daemon's encoding of -1.
    (raw_rule,) = _reply_rules_raw(raw)
    assert fields_of(raw_rule, 2) == [(WT_VARINT, (1 << 64) - 1)]
    assert as_int32(fields_of(raw_rule, 2)[0][1]) == -1
    assert PROTOCOL_TAG + MINUS_ONE_VARINT in raw_rule

    api.ok(sg_del=sg)


def test_sg_rule_tcp_without_ports_rejected(api: Api, pb, uid):
    sg = f"sg-tcp-{uid}"
    api.ok(sg_add=pb.MessageV0.Sg(id=sg))
    rule = api.rule(direction=pb.MessageV0.Rule.INBOUND, protocol=6, cidr="10.0.0.0/8")
    err = api.fails(sg_rule_add=pb.MessageV0.SgRuleAddReq(sg_id=sg, rule=rule))
    assert err.description == "Bad Security Group rule format"
    assert len(api.ok(sg_rule_list=sg).sg_rule_list) == 0
    api.ok(sg_del=sg)


def test_sg_rule_tcp_with_ports_accepted(api: Api, pb, uid):
    sg = f"sg-tcpok-{uid}"
    api.ok(sg_add=pb.MessageV0.Sg(id=sg))
    rule = api.rule(direction=pb.MessageV0.Rule.OUTBOUND, protocol=6, cidr="10.0.0.0/8",
                    port_start=22, port_end=22)
    api.ok(sg_rule_add=pb.MessageV0.SgRuleAddReq(sg_id=sg, rule=rule))
    (r,) = api.ok(sg_rule_list=sg).sg_rule_list
    assert (r.direction, r.protocol, r.port_start, r.port_end) == (pb.MessageV0.Rule.OUTBOUND, 6, 22, 22)
    assert (r.cidr.address, r.cidr.mask_size) == ("10.0.0.0", 8)
    api.ok(sg_del=sg)


def test_sg_rule_list_unknown_sg(api: Api, uid):
    err = api.fails(sg_rule_list=f"sg-ghost-{uid}")
    assert err.description == "Security Group not found"


def test_sg_member_add_bad_ip(api: Api, pb, uid):
    sg = f"sg-mem-{uid}"
    api.ok(sg_add=pb.MessageV0.Sg(id=sg))
    for bad in ("not-an-ip", "10.0.0.256", "2001:db8:::1", ""):
        err = api.fails(sg_member_add=pb.MessageV0.SgMemberAddReq(sg_id=sg, member=bad))
        assert err.description == "Bad IP format", bad
    api.ok(sg_member_add=pb.MessageV0.SgMemberAddReq(sg_id=sg, member="10.1.2.3"))
    assert list(api.ok(sg_member_list=sg).sg_member_list) == ["10.1.2.3"]
    api.ok(sg_del=sg)
