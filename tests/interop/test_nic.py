"""NIC requests: nic_add, nic_list, nic_details, nic_stats, nic_del."""

from __future__ import annotations

import pytest

from conftest import Api

MAC = "52:54:00:12:34:56"


def test_nic_add_default_type_path(api: Api, daemon, uid):
    nic_id = f"vh{uid}"
    res = api.ok(nic_add=api.nic(nic_id, MAC, 1000, ["10.0.0.2"]))
    assert res.HasField("nic_add")
    assert res.nic_add.path == f"{daemon.socket_dir}/qemu-vhost-{nic_id}"
    api.ok(nic_del=nic_id)


def test_nic_add_tap_path_is_id(api: Api, pb, uid):
    nic_id = f"bft{uid}"[:15]  # interface names are at most 15 bytes
    try:
        res = api.ok(nic_add=api.nic(nic_id, "52:54:00:12:34:57", 1001, ["10.0.1.2"],
                                     type=pb.MessageV0.Nic.TAP))
        assert res.nic_add.path == nic_id
        details = api.ok(nic_details=nic_id).nic_details
        assert len(details) == 1 and details[0].type == pb.MessageV0.Nic.TAP
    finally:
        # a real interface on the host: always remove it
        api.ok(nic_del=nic_id)


def test_nic_details_round_trip_and_ip_normalisation(api: Api, uid):
    nic_id = f"ipn{uid}"
    ips = [
        "2001:0db8:0000:0000:0000:0000:0000:0001",
        "10.0.0.1",
        "2001:db8::1",   # duplicate of the first once normalised
        "10.0.0.1",      # literal duplicate
    ]
    api.ok(nic_add=api.nic(nic_id, MAC, 4242, ips))
    res = api.ok(nic_details=nic_id)
    assert len(res.nic_details) == 1
    nic = res.nic_details[0]
    assert nic.IsInitialized()
    assert nic.id == nic_id
    assert nic.mac.lower() == MAC
    assert nic.vni == 4242
    assert "2001:0db8:0000:0000:0000:0000:0000:0001" not in nic.ip
    assert sorted(nic.ip) == sorted(["2001:db8::1", "10.0.0.1"]), list(nic.ip)
    api.ok(nic_del=nic_id)


def test_long_ipv6_comes_back_compressed(api: Api, uid):
    nic_id = f"ip6{uid}"
    api.ok(nic_add=api.nic(nic_id, MAC, 5, ["2001:0db8:0000:0000:0000:0000:0000:0001"]))
    (nic,) = api.ok(nic_details=nic_id).nic_details
    assert list(nic.ip) == ["2001:db8::1"]
    api.ok(nic_del=nic_id)


@pytest.mark.parametrize("mac", ["zz:zz:zz:zz:zz:zz", "52:54:00:12:34", "52:54:00:12:34:56:78",
                                 "", "not a mac"])
def test_nic_add_bad_mac(api: Api, uid, mac):
    nic_id = f"bm{uid}"
    err = api.fails(nic_add=api.nic(nic_id, mac, 10))
    assert err.description == "Bad NIC format"
    assert api.fails(nic_details=nic_id).description == f"NIC: {nic_id} not found"


@pytest.mark.parametrize("vni", [1 << 24, (1 << 24) + 1, (1 << 32) - 1])
def test_nic_add_vni_too_large(api: Api, uid, vni):
    nic_id = f"bv{uid}"
    err = api.fails(nic_add=api.nic(nic_id, MAC, vni))
    assert err.description == "Bad NIC format"
    assert api.fails(nic_details=nic_id).description == f"NIC: {nic_id} not found"


def test_nic_add_max_vni_accepted(api: Api, uid):
    nic_id = f"mv{uid}"
    api.ok(nic_add=api.nic(nic_id, MAC, (1 << 24) - 1))
    (nic,) = api.ok(nic_details=nic_id).nic_details
    assert nic.vni == (1 << 24) - 1
    api.ok(nic_del=nic_id)


def test_nic_list_sorted_and_details_all(api: Api, uid):
    ids = [f"zz{uid}", f"aa{uid}", f"mm{uid}", f"ab{uid}"]
    for i, nic_id in enumerate(ids):
        api.ok(nic_add=api.nic(nic_id, f"52:54:00:00:01:{i:02x}", 100 + i))
    listed = list(api.ok(nic_list=True).nic_list)
    assert listed == sorted(listed), listed
    assert set(ids) <= set(listed)

    every = api.ok(nic_details="").nic_details
    assert sorted(n.id for n in every) == sorted(listed)
    by_id = {n.id: n for n in every}
    for i, nic_id in enumerate(ids):
        assert by_id[nic_id].vni == 100 + i
        assert by_id[nic_id].IsInitialized()

    for nic_id in ids:
        api.ok(nic_del=nic_id)
    after = list(api.ok(nic_list=True).nic_list)
    assert not set(ids) & set(after)


def test_nic_details_unknown(api: Api, uid):
    err = api.fails(nic_details=f"ghost{uid}")
    assert err.description == f"NIC: ghost{uid} not found"


def test_nic_stats_known_nic(api: Api, uid):
    nic_id = f"st{uid}"
    api.ok(nic_add=api.nic(nic_id, MAC, 77))
    res = api.ok(nic_stats=nic_id)
    assert res.HasField("nic_stats")
    stats = res.nic_stats
    assert stats.HasField("in") and stats.HasField("out")
    assert getattr(stats, "in") == 0
    assert stats.out == 0
    api.ok(nic_del=nic_id)


def test_nic_del_unknown_succeeds(api: Api, uid):
    api.ok(nic_del=f"never{uid}")


def test_nic_del_removes(api: Api, uid):
    nic_id = f"del{uid}"
    api.ok(nic_add=api.nic(nic_id, MAC, 8))
    assert nic_id in api.ok(nic_list=True).nic_list
    api.ok(nic_del=nic_id)
    assert nic_id not in api.ok(nic_list=True).nic_list
    assert api.fails(nic_details=nic_id).description == f"NIC: {nic_id} not found"


def test_nic_export_is_a_connection_export(api: Api, uid):
    """nic_export returns the documented binary format (docs/FIREWALL.md): a 12-byte header
    "BFCT", version 1, three zero bytes, a big-endian entry count, then 48 bytes per entry.
    A NIC without traffic tracks nothing."""
    import struct

    nic_id = f"exp{uid}"
    api.ok(nic_add=api.nic(nic_id, MAC, 4243, ["10.0.0.3"]))
    try:
        data = api.ok(nic_export=nic_id).nic_export.fw_data.data
        magic, version, reserved, count = struct.unpack("!4sB3sI", data[:12])
        assert (magic, version, reserved) == (b"BFCT", 1, b"\0\0\0")
        assert count == 0 and len(data) == 12 + 48 * count
    finally:
        api.ok(nic_del=nic_id)
