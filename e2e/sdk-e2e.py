"""Run on the machine that runs QEMU by `cargo xtask e2e`: the official XenAPI Python SDK
(PyPI `xenapi`) drives dom0's xapi over HTTPS through the port QEMU forwards on the loopback
address, as a remote script or XenCenter would.

Usage: sdk-e2e.py URL PASSWORD. Prints `E2E-CHECK sdk-<step> PASS|FAIL <detail>` and
`E2E-METRIC <name> <value> ms` lines; at the end sets the pool's `other_config:sdk-done`
(dom0 waits for it before it checks that nothing is left).
"""

import os
import sys
import threading
import time
import traceback

URL, PASSWORD = sys.argv[1], sys.argv[2]
failed = []
# How long the guest may take to report (its kernel boots under TCG emulation).
AGENT_WAIT = int(os.environ.get("SDK_AGENT_WAIT", "240"))


def check(name, ok, detail=""):
    print("E2E-CHECK sdk-%s %s %s" % (name, "PASS" if ok else "FAIL", detail), flush=True)
    if not ok:
        failed.append(name)
    return ok


def metric(name, ms):
    print("E2E-METRIC %s %d ms" % (name, ms), flush=True)


try:
    import XenAPI
except ImportError as e:
    check("login", False, "the XenAPI Python SDK is missing on the host (pip install xenapi): %s" % e)
    sys.exit(1)


def wait(what, f, timeout):
    """Polls f() every second until it returns a true value; that value, or None."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = f()
        except XenAPI.Failure:
            v = None
        if v:
            return v
        time.sleep(1)
    return None


def session(originator):
    s = None
    for _ in range(30):
        try:
            s = XenAPI.Session(URL, ignore_ssl=True)
            s.xenapi.login_with_password("root", PASSWORD, "2.21", originator)
            return s
        except Exception as e:  # the forward may not be up yet
            last = e
            time.sleep(2)
    raise last


def main():
    t = time.time()
    s = session("sdk-e2e")
    check("login", True, "%s in %.1f s" % (URL, time.time() - t))
    x = s.xenapi
    host = x.host.get_all()[0]
    pool = x.pool.get_all()[0]
    sr = x.SR.get_all()[0]
    nets = [n for n, r in x.network.get_all_records().items() if r["name_label"] == "guests"]
    net = nets[0] if nets else x.network.create(
        {"name_label": "guests", "name_description": "", "MTU": "1500", "other_config": {}})
    mib = str(int(os.environ.get("SDK_MIB", "128")) << 20)
    vm = x.VM.create({
        "name_label": "sdk-guest", "name_description": "made by the host's XenAPI SDK",
        "memory_static_min": mib, "memory_dynamic_min": mib,
        "memory_dynamic_max": mib, "memory_static_max": mib,
        "VCPUs_max": "1", "VCPUs_at_startup": "1",
        "PV_kernel": os.environ.get("SDK_KERNEL", "/boot/domu-kernel"),
        "PV_ramdisk": os.environ.get("SDK_RAMDISK", "/boot/domu-initrd"),
        "PV_args": "console=hvc0 rdinit=/init e2e=xapi", "other_config": {},
    })
    vdi = x.VDI.create({"name_label": "sdk-disk", "SR": sr, "virtual_size": str(16 << 20),
                        "type": "user", "sharable": False, "read_only": False,
                        "other_config": {}, "sm_config": {"path": "/tmp/sdk-disk.img"}})
    vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                        "type": "Disk", "empty": False, "other_config": {},
                        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    vif = x.VIF.create({"device": "0", "network": net, "VM": vm, "MAC": "00:16:3e:00:00:43",
                        "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
                        "qos_algorithm_params": {}})
    check("vm-create", x.VM.get_power_state(vm) == "Halted",
          "VM %s VDI %s VBD %s VIF %s" % (x.VM.get_uuid(vm), x.VDI.get_uuid(vdi),
                                         x.VBD.get_uuid(vbd), x.VIF.get_uuid(vif)))

    # A watcher on its own session follows the VM's power_state through event.from.
    seen = []
    stop = threading.Event()
    w = session("sdk-e2e-watcher")
    token = getattr(w.xenapi.event, "from")(["vm"], "", 0.0)["token"]

    def watch():
        tok = token
        while not stop.is_set():
            try:
                r = getattr(w.xenapi.event, "from")(["vm"], tok, 5.0)
            except Exception:
                time.sleep(1)
                continue
            tok = r["token"]
            for e in r["events"]:
                if e["ref"] == vm and "snapshot" in e:
                    ps = e["snapshot"]["power_state"]
                    if not seen or seen[-1] != ps:
                        seen.append(ps)

    th = threading.Thread(target=watch, daemon=True)
    th.start()

    def guest_agent_report():
        gm = x.VM.get_guest_metrics(vm)
        if gm == "OpaqueRef:NULL":
            return None
        r = x.VM_guest_metrics.get_record(gm)
        return r if r["networks"].get("0/ip") else None

    # Two VM.start of the halted VM at once, each on its own session: xapi runs one (the
    # VM's queue), the other finds it Running: VM_BAD_POWER_STATE.
    starters = [session("sdk-e2e-start-%d" % i) for i in range(2)]
    results = [None, None]

    def start(i):
        try:
            starters[i].xenapi.VM.start(vm, False, False)
            results[i] = "ok"
        except XenAPI.Failure as f:
            results[i] = f.details
        except Exception as f:  # noqa: BLE001 - reported as the check's detail
            results[i] = repr(f)

    t0 = time.time()
    ths = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for th_ in ths:
        th_.start()
    for th_ in ths:
        th_.join()
    check("vm-start", x.VM.get_power_state(vm) == "Running",
          "returned after %d ms" % ((time.time() - t0) * 1000))
    losers = [r for r in results if r != "ok"]
    check("concurrent-start",
          results.count("ok") == 1 and len(losers) == 1
          and isinstance(losers[0], list) and losers[0][:1] == ["VM_BAD_POWER_STATE"],
          "two VM.start at once: %s" % results)
    ok = wait("Running event", lambda: "Running" in seen, 60)
    check("event-running", bool(ok), "power_state changes seen through event.from: %s" % seen)
    domid = x.VM.get_domid(vm)
    check("vm-domid-resident-on", int(domid) > 0 and x.VM.get_resident_on(vm) == host,
          "domid %s resident_on %s" % (domid, x.VM.get_resident_on(vm)))
    # The guest reached user space: its /init reports through xenstore as a guest agent.
    gm = wait("guest agent", guest_agent_report, AGENT_WAIT)
    if check("guest-metrics", gm is not None,
             "os_version %s networks %s after %d ms" % (
                 gm["os_version"] if gm else "-", gm["networks"] if gm else "-",
                 (time.time() - t0) * 1000)):
        metric("sdk-vm-start-to-guest-agent", (time.time() - t0) * 1000)
    m = x.VM.get_metrics(vm)
    time.sleep(3)  # two monitor samples: a utilisation per vCPU
    mr = x.VM_metrics.get_record(m)
    check("vm-metrics",
          int(mr["memory_actual"]) > 0 and int(mr["VCPUs_number"]) == 1
          and "0" in mr["VCPUs_utilisation"] and mr["state"] != [],
          "memory_actual=%s VCPUs_number=%s VCPUs_utilisation=%s state=%s start_time=%s" % (
              mr["memory_actual"], mr["VCPUs_number"], mr["VCPUs_utilisation"], mr["state"],
              mr["start_time"]))

    t1 = time.time()
    x.VM.clean_reboot(vm)
    d2 = x.VM.get_domid(vm)
    check("clean-reboot", x.VM.get_power_state(vm) == "Running" and d2 != domid,
          "domid %s -> %s in %d ms" % (domid, d2, (time.time() - t1) * 1000))
    gm = wait("guest agent after reboot", guest_agent_report, AGENT_WAIT)
    check("guest-metrics-after-reboot", gm is not None,
          "new boot reported %s" % (gm["networks"] if gm else "-"))

    # Suspend to the suspend image and resume in a new domain; the clean shutdown below
    # needs the resumed guest to answer.
    d3 = x.VM.get_domid(vm)
    t3 = time.time()
    x.VM.suspend(vm)
    ts = (time.time() - t3) * 1000
    if check("vm-suspend", x.VM.get_power_state(vm) == "Suspended" and x.VM.get_domid(vm) == "-1",
             "power_state %s domid %s after %d ms" % (
                 x.VM.get_power_state(vm), x.VM.get_domid(vm), ts)):
        metric("sdk-vm-suspend", ts)
    # The image is in the VM's suspend VDI (type suspend) in the pool's suspend SR.
    sv = x.VM.get_suspend_VDI(vm)
    svr = x.VDI.get_record(sv) if sv != "OpaqueRef:NULL" else None
    check("suspend-vdi", svr is not None and svr["type"] == "suspend"
          and svr["SR"] == x.pool.get_suspend_image_SR(pool),
          "suspend_VDI %s: type %s SR %s virtual_size %s" % (
              sv, svr and svr["type"], svr and svr["SR"], svr and svr["virtual_size"]))
    t4 = time.time()
    x.VM.resume(vm, False, False)
    tr = (time.time() - t4) * 1000
    d4 = x.VM.get_domid(vm)
    if check("vm-resume", x.VM.get_power_state(vm) == "Running" and d4 not in ("-1", d3),
             "power_state %s domid %s -> %s after %d ms" % (
                 x.VM.get_power_state(vm), d3, d4, tr)):
        metric("sdk-vm-resume", tr)
    check("suspend-vdi-destroyed",
          x.VM.get_suspend_VDI(vm) == "OpaqueRef:NULL" and sv not in x.VDI.get_all(),
          "after resume: suspend_VDI %s; %s among the VDIs: %s" % (
              x.VM.get_suspend_VDI(vm), sv, sv in x.VDI.get_all()))
    wait("Suspended event", lambda: "Suspended" in seen, 30)

    t2 = time.time()
    x.VM.clean_shutdown(vm)
    check("clean-shutdown", x.VM.get_power_state(vm) == "Halted",
          "in %d ms" % ((time.time() - t2) * 1000))
    metric("sdk-vm-clean-shutdown", (time.time() - t2) * 1000)
    wait("Halted event", lambda: seen and seen[-1] == "Halted", 30)
    stop.set()
    # Changes to the halted VM before its start (its allowed operations, metrics) come as
    # `mod` events too, so the sequence may open with Halted; from the start on it must be
    # Running first and Halted last.
    started = seen[1:] if seen[:1] == ["Halted"] else seen
    check("event-sequence", started[:1] == ["Running"] and started[-1:] == ["Halted"],
          "power_state through event.from: %s" % seen)

    running = [r["name_label"] for r in x.VM.get_all_records().values()
               if r["power_state"] != "Halted" and not r["is_control_domain"]]
    attached = [r["device"] for r in x.VBD.get_all_records().values()
                if r["VM"] == vm and r["currently_attached"]]
    check("nothing-left",
          running == [] and attached == [] and x.VM.get_domid(vm) == "-1"
          and x.VM_guest_metrics.get_all() == []
          and x.VM_metrics.get_memory_actual(m) == "0",
          "running VMs %s, attached VBDs %s, domid %s, guest metrics %s" % (
              running, attached, x.VM.get_domid(vm), x.VM_guest_metrics.get_all()))
    x.VM.destroy(vm)
    return pool, x


try:
    pool, x = main()
except Exception as e:
    check("exception", False, "%s: %s" % (type(e).__name__, str(e).replace("\n", " ")))
    traceback.print_exc()
    try:
        x = session("sdk-e2e-end").xenapi
        pool = x.pool.get_all()[0]
    except Exception:
        sys.exit(1)
try:
    x.pool.add_to_other_config(pool, "sdk-done", "FAIL" if failed else "PASS")
except XenAPI.Failure:
    x.pool.remove_from_other_config(pool, "sdk-done")
    x.pool.add_to_other_config(pool, "sdk-done", "FAIL" if failed else "PASS")
sys.exit(1 if failed else 0)
