"""Drives a running xapi's storage with the official XenAPI Python SDK (PyPI `xenapi`).

Usage: sdk_storage.py URL PASSWORD SR_DIR
Exits non-zero with a message on the first failed check.
"""
import os
import sys

import XenAPI

URL, PASSWORD, SR_DIR = sys.argv[1], sys.argv[2], sys.argv[3]
MIB = 1 << 20


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def expect_failure(code, fn, *args):
    try:
        fn(*args)
    except XenAPI.Failure as e:
        check(e.details[0] == code, "expected %s, got %r" % (code, e.details))
        return e.details
    raise AssertionError("expected %s, call succeeded" % code)


s = XenAPI.Session(URL)
s.xenapi.login_with_password("root", PASSWORD, "2.21", "sdk-storage")
x = s.xenapi
host = x.host.get_all()[0]

sr = x.SR.create(host, {"location": SR_DIR}, "0", "sdk-sr", "", "ext", "user", False, {})
rec = x.SR.get_record(sr)
check(rec["type"] == "ext" and int(rec["physical_size"]) > 0, rec)
check(len(rec["PBDs"]) == 1, rec)

vdi = x.VDI.create({"SR": sr, "name_label": "disk", "name_description": "",
                    "virtual_size": str(16 * MIB), "type": "user", "sharable": False,
                    "read_only": False, "other_config": {}})
uuid = x.VDI.get_uuid(vdi)
check(os.path.exists(os.path.join(SR_DIR, uuid + ".qcow2")), "no image for " + uuid)
check(int(x.VDI.get_virtual_size(vdi)) == 16 * MIB, "virtual_size")

snap = x.VDI.snapshot(vdi, {})
srec = x.VDI.get_record(snap)
check(srec["is_a_snapshot"] and srec["snapshot_of"] == vdi, srec)
check(x.VDI.get_snapshots(vdi) == [snap], "snapshots")
check(x.VDI.get_sm_config(vdi).get("vhd-parent") == srec["uuid"], x.VDI.get_sm_config(vdi))
clone = x.VDI.clone(snap, {})
check(not x.VDI.get_is_a_snapshot(clone), "clone is not a snapshot")
x.VDI.resize(vdi, str(32 * MIB))
check(int(x.VDI.get_virtual_size(vdi)) == 32 * MIB, "resized")
expect_failure("SR_FULL", x.VDI.create, {"SR": sr, "name_label": "huge",
               "name_description": "", "virtual_size": str(1 << 60), "type": "user",
               "sharable": False, "read_only": False, "other_config": {}})

pbd = rec["PBDs"][0]
expect_failure("SR_HAS_PBD", x.SR.forget, sr)
x.PBD.unplug(pbd)
expect_failure("SR_HAS_NO_PBDS", x.VDI.snapshot, vdi, {})
x.PBD.plug(pbd)
x.SR.scan(sr)
expect_failure("SR_HAS_PBD", x.SR.destroy, sr)
for v in [clone, vdi, snap]:
    x.VDI.destroy(v)
x.PBD.unplug(pbd)
x.SR.destroy(sr)
check(sr not in x.SR.get_all(), "SR destroyed")
# The images and the SR's metadata are gone (sm keeps its flock file, sr.lock).
left = [n for n in os.listdir(SR_DIR) if n != "sr.lock"]
check(left == [], "left in the SR's directory: %r" % left)
check("<UUID>" not in x.SR.probe(host, {"location": SR_DIR}, "ext", {}), "probe after destroy")
print("SDK-STORAGE-OK")
