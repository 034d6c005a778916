"""Drives a running xapi with the official XenAPI Python SDK (PyPI `xenapi`).

Usage: sdk_test.py URL PASSWORD
Exits non-zero with a message on the first failed check.
"""
import sys
import threading

try:
    import XenAPI
except ImportError:
    sys.stderr.write("the XenAPI Python SDK is missing: pip install xenapi\n")
    sys.exit(3)

URL, PASSWORD = sys.argv[1], sys.argv[2]
CLASSES = ["VM", "host", "pool", "session", "task", "host_metrics", "VM_metrics",
           "SR", "PBD", "VDI", "VBD", "network", "PIF", "VIF", "Bond", "VLAN",
           "PGPU", "GPU_group", "VGPU", "VGPU_type"]


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


# Wrong password.
bad = XenAPI.Session(URL)
expect_failure("SESSION_AUTHENTICATION_FAILED", bad.xenapi.login_with_password, "root", "wrong", "2.21", "sdk-test")

s = XenAPI.Session(URL)
s.xenapi.login_with_password("root", PASSWORD, "2.21", "sdk-test")
x = s.xenapi

# Every class's records.
for cls in CLASSES:
    recs = getattr(x, cls).get_all_records()
    check(isinstance(recs, dict), "%s.get_all_records is not a dict" % cls)
    for ref, rec in recs.items():
        check(ref.startswith("OpaqueRef:"), "bad ref %s" % ref)
        check(getattr(x, cls).get_by_uuid(rec["uuid"]) == ref, "%s.get_by_uuid" % cls)
check(len(x.host.get_all()) == 1, "one host")
host = x.host.get_all()[0]
hrec = x.host.get_record(host)
check(int(x.host_metrics.get_memory_total(hrec["metrics"])) > 0, "host memory_total")
check(len(hrec["PIFs"]) >= 2, "host PIFs")
check(len(hrec["PGPUs"]) >= 1, "host PGPUs")
pool = x.pool.get_all()[0]
check(x.pool.get_master(pool) == host, "pool master")
sr = x.pool.get_default_SR(pool)
dom0 = [v for v, r in x.VM.get_all_records().items() if r["is_control_domain"]]
check(len(dom0) == 1 and x.VM.get_power_state(dom0[0]) == "Running", "dom0 running")

# Follow changes from here on.
ev = getattr(x.event, "from")(["vm"], "", 0.0)
token = ev["token"]
check(any(e["class"] == "vm" for e in ev["events"]), "event.from with an empty token lists VMs")

# A network, a VM with a disk and a NIC.
net = x.network.create({"name_label": "sdk-net", "name_description": "", "MTU": "1500", "other_config": {}})
check(x.network.get_name_label(net) == "sdk-net", "network name")
check(x.network.get_bridge(net) != "", "bridge chosen")
vm = x.VM.create({
    "name_label": "sdk-vm", "name_description": "made by the SDK test",
    "memory_static_min": str(256 << 20), "memory_dynamic_min": str(512 << 20),
    "memory_dynamic_max": str(512 << 20), "memory_static_max": str(512 << 20),
    "VCPUs_max": "2", "VCPUs_at_startup": "2",
    "PV_kernel": "", "PV_ramdisk": "", "PV_args": "console=hvc0",
    "other_config": {"purpose": "test"},
})
check(x.VM.get_power_state(vm) == "Halted", "new VM halted")
check(x.VM.get_other_config(vm) == {"purpose": "test"}, "other_config")
vdi = x.VDI.create({"name_label": "sdk-disk", "SR": sr, "virtual_size": str(8 << 30), "type": "user",
                    "sharable": False, "read_only": False, "other_config": {}})
vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                    "type": "Disk", "empty": False, "other_config": {}, "qos_algorithm_type": "",
                    "qos_algorithm_params": {}})
vif = x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                    "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
mac = x.VIF.get_MAC(vif)
first = int(mac.split(":")[0], 16)
check(first & 2 == 2 and first & 1 == 0, "generated MAC %s is locally administered unicast" % mac)
check(vif in x.network.get_VIFs(net), "network.VIFs holds the VIF")
check(vif in x.VM.get_VIFs(vm) and vbd in x.VM.get_VBDs(vm), "VM.VIFs/VBDs")
check(vbd in x.VDI.get_VBDs(vdi) and vdi in x.SR.get_VDIs(sr), "VDI.VBDs/SR.VDIs")
check(x.VBD.get_device(vbd) == "xvda", "VBD device")
expect_failure("NETWORK_CONTAINS_VIF", x.network.destroy, net)
expect_failure("VDI_IN_USE", x.VDI.destroy, vdi)

# Start, and see the power state change through event.from.
result = {}


# The watcher has its own connection: an SDK session object is not thread-safe.
w = XenAPI.Session(URL)
w.xenapi.login_with_password("root", PASSWORD, "2.21", "sdk-test-watcher")


def watch():
    tok = token
    while True:
        r = getattr(w.xenapi.event, "from")(["vm"], tok, 30.0)
        tok = r["token"]
        for e in r["events"]:
            if e["ref"] == vm and e["snapshot"].get("power_state") == "Running":
                result["seen"] = e
                return
        if not r["events"]:
            return


t = threading.Thread(target=watch)
t.start()
x.VM.start(vm, False, False)
t.join(60)
check(not t.is_alive(), "event watcher finished")
check("seen" in result, "event.from reported the VM Running")
check(result["seen"]["class"] == "vm" and result["seen"]["operation"] in ("add", "mod"), "event shape")
check(x.VM.get_power_state(vm) == "Running", "running")
check(int(x.VM.get_domid(vm)) > 0, "domid")
check(x.VM.get_resident_on(vm) == host, "resident_on")
check(vm in x.host.get_resident_VMs(host), "host.resident_VMs")
check(x.VBD.get_currently_attached(vbd), "VBD attached")
expect_failure("VM_BAD_POWER_STATE", x.VM.start, vm, False, False)
expect_failure("VM_BAD_POWER_STATE", x.VM.destroy, vm)

# Async variant with a task.
task = x.Async.VM.pause(vm)
for _ in range(600):
    if x.task.get_status(task) != "pending":
        break
    import time
    time.sleep(0.05)
check(x.task.get_status(task) == "success", "Async.VM.pause task succeeded")
check(x.VM.get_power_state(vm) == "Paused", "paused")
x.VM.unpause(vm)
x.VM.clean_shutdown(vm)
check(x.VM.get_power_state(vm) == "Halted", "halted after shutdown")
check(x.VM.get_domid(vm) == "-1", "domid cleared")
check(vm not in x.host.get_resident_VMs(host), "no longer resident")

# Bad input: each gets XAPI's error and the daemon goes on serving.
expect_failure("HANDLE_INVALID", x.VM.get_record, "OpaqueRef:00000000-0000-0000-0000-000000000000")
d = expect_failure("HANDLE_INVALID", x.VM.get_record, net)
check(d[1] == "VM", "HANDLE_INVALID names the class")
expect_failure("UUID_INVALID", x.VM.get_by_uuid, "not-a-uuid")
expect_failure("FIELD_TYPE_ERROR", x.VM.start, vm, "yes", False)
expect_failure("FIELD_TYPE_ERROR", x.VM.set_VCPUs_max, vm, "many")
expect_failure("MESSAGE_PARAMETER_COUNT_MISMATCH", x.VM.start, vm)
expect_failure("MESSAGE_METHOD_UNKNOWN", x.VM.frobnicate, vm)
expect_failure("MAC_INVALID", x.VIF.create, {"device": "1", "network": net, "VM": vm, "MAC": "zz:zz"})
expect_failure("DEVICE_ALREADY_EXISTS", x.VIF.create, {"device": "0", "network": net, "VM": vm, "MAC": ""})
big = x.VM.create({"name_label": "too-big", "memory_static_min": "0", "memory_dynamic_min": str(1 << 40),
                   "memory_dynamic_max": str(1 << 40), "memory_static_max": str(1 << 40),
                   "VCPUs_max": "1", "VCPUs_at_startup": "1"})
d = expect_failure("HOST_NOT_ENOUGH_FREE_MEMORY", x.VM.start, big, False, False)
check(int(d[1]) == 1 << 40 and int(d[2]) < 1 << 40, "memory needed/available reported")
check(x.VM.get_power_state(big) == "Halted", "failed start leaves VM halted")

# A forged session is refused (the SDK turns SESSION_INVALID into a retry; call raw).
import xmlrpc.client
raw = xmlrpc.client.ServerProxy(URL, allow_none=True)
r = raw.VM.get_all("OpaqueRef:forged")
check(r["Status"] == "Failure" and r["ErrorDescription"][0] == "SESSION_INVALID", "forged session: %r" % r)

# Still serving; bonds.
pifs = [p for p, r in x.PIF.get_all_records().items() if r["physical"] and not r["management"]]
bnet = x.network.create({"name_label": "bond-net"})
bond = x.Bond.create(bnet, pifs[:2], "", "active-backup", {})
check(x.Bond.get_mode(bond) == "active-backup", "bond mode")
check(sorted(x.Bond.get_slaves(bond)) == sorted(pifs[:2]), "bond slaves")
expect_failure("PIF_ALREADY_BONDED", x.Bond.create, x.network.create({"name_label": "n2"}), pifs[:2], "", "lacp", {})
x.VM.destroy(big)
x.VM.destroy(vm)
check(x.VIF.get_all().count(vif) == 0 and vif not in x.network.get_VIFs(net), "VM.destroy removed its VIF")
x.network.destroy(net)
x.session.logout()
print("SDK-TEST-OK")
