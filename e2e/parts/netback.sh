# Part `netback`: the project's userspace network backend (netbackd) against Linux's
# xen-netfront on real Xen, and against the kernel's xen-netback in the same boot.
#
# 1. rmmod xen-netback; netbackd serves every backend/vif of dom0; `xl create` of a guest
#    with a vif on xenbr0: both ends Connected, the guest pings dom0 (also 8000-byte pings
#    over MTU 9000: multi-slot frames, no IP fragments); xl destroy removes the tap.
# 2. The comparison, both guests up at once: xen-netback loaded again serves guest
#    nb-kernel; with the xen-backend bus's autoprobe off (so the kernel's driver binds no new
#    vif), `netbackd --domid` serves guest nb-ours, whose vif is hot-plugged with
#    `xl network-attach`. dom0 runs net-load against each guest's server, interleaved: three
#    rounds of guest→dom0 (tx) and dom0→guest (rx) with 1 and 4 streams, and pings.
# Guest side: e2e/guest-parts/netback.sh. Metrics: guest-net-<case>:kernel-netback,
# guest-net-<case>:netbackd (Mbit/s, medians), guest-net-<case>:netbackd/kernel (percent).
NB_BR=xenbr0; NB_DOM0=10.0.5.1
K=/lib/modules/$(uname -r)/kernel
NB_CASES="tx-1 tx-4 rx-1 rx-4"
AUTOPROBE=/sys/bus/xen-backend/drivers_autoprobe

[ -e /dev/net/tun ] || insmod $K/drivers/net/tun.ko
[ -e /dev/net/tun ]; ok netback-tun $? "/dev/net/tun"
[ -d /sys/class/net/$NB_BR ] || brctl addbr $NB_BR
ip addr add $NB_DOM0/24 dev $NB_BR && ip link set $NB_BR up
ok netback-bridge-address $? "$NB_BR $NB_DOM0/24"
if [ "$HOTPLUG" = debian ]; then NB_SCRIPT=""; else NB_SCRIPT=",script=/e2e/vif-e2e"; fi
# The same for `xl network-attach`, which takes the settings as separate arguments.
NB_ATTACH="bridge=$NB_BR mac=00:16:3e:00:05:04 $(echo "${NB_SCRIPT#,}")"

# nb_create TAG IP MAC [novif]: starts `xl create` of guest nb-TAG in the background
# (rc in /tmp/nb-TAG.rc).
nb_create() {
  vif="vif = [ 'bridge=$NB_BR,mac=$3$NB_SCRIPT' ]"
  [ "$4" = novif ] && vif="vif = [ ]"
  cat > /tmp/nb-$1.cfg <<CFG
name = "nb-$1"
type = "pv"
kernel = "/boot/domu-kernel"
ramdisk = "/boot/domu-initrd"
extra = "console=hvc0 rdinit=/init e2e_part=netback nb_ip=$2 nb_peer=$NB_DOM0 nb_tag=$1"
memory = 256
vcpus = 1
$([ -n "$DOMU_CPUS" ] && echo "cpus = \"$DOMU_CPUS\"")
$vif
on_poweroff = "destroy"
on_crash = "destroy"
CFG
  rm -f /tmp/nb-$1.rc
  ( timeout $DOMU_TIMEOUT xl create /tmp/nb-$1.cfg > /tmp/nb-$1.xl 2>&1; echo $? > /tmp/nb-$1.rc ) &
}

# nb_wait TAG...: waits until each guest printed NB-READY (or its xl create failed), raising
# its vif's and the bridge's MTU to 9000 once the vif is Connected.
nb_wait() {
  t0=$(cs); mtus=""
  while [ $(( $(cs) - t0 )) -lt $((DOMU_TIMEOUT * 100)) ]; do
    left=""
    for t in "$@"; do
      grep -q "NB-READY $t" /var/log/xen/console/guest-nb-$t.log 2>/dev/null && continue
      rc=""; [ -s /tmp/nb-$t.rc ] && read -r rc < /tmp/nb-$t.rc
      [ -n "$rc" ] && [ "$rc" != 0 ] && continue
      left="$left $t"
    done
    for t in "$@"; do
      case " $mtus " in *" $t "*) continue ;; esac
      d=$(xl domid nb-$t 2>/dev/null) || continue
      if [ "$(xenstore-read /local/domain/0/backend/vif/$d/0/state 2>/dev/null)" = 4 ]; then
        ip link set vif$d.0 mtu 9000 && ip link set $NB_BR mtu 9000
        echo "netback: vif$d.0 (nb-$t) Connected after $(( ($(cs) - t0) * 10 )) ms; mtu 9000: rc=$?"
        mtus="$mtus $t"
      fi
    done
    [ -z "$left" ] && break
    usleep 200000
  done
}

# nb_report TAG: the guest's checks, and whether both ends of its vif are Connected.
nb_report() {
  d=$(xl domid nb-$1 2>/dev/null)
  fe=$(xenstore-read /local/domain/$d/device/vif/0/state 2>/dev/null)
  be=$(xenstore-read /local/domain/0/backend/vif/$d/0/state 2>/dev/null)
  grep '^E2E-DOMU-CHECK' /var/log/xen/console/guest-nb-$1.log 2>/dev/null | sed 's/^E2E-DOMU-CHECK /E2E-CHECK netback-guest:/'
  [ "$fe" = 4 ] && [ "$be" = 4 ]
}

# nb_stop NAME: xl destroy and wait until the domain is gone.
nb_stop() {
  timeout 60 xl destroy "$1" > /dev/null 2>&1
  i=0; while xl domid "$1" > /dev/null 2>&1 && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
}

# ---- 1. netbackd serves every vif: xl create, Connected, pings ----
echo "E2E-MARK netback-ours uptime=$(up)"
rmmod xen-netback; rc=$?
[ ! -d /sys/module/xen_netback ] && [ $rc = 0 ]; ok netback-rmmod $? "rmmod xen-netback rc=$rc"
rm -f /run/netbackd.pid
RUST_LOG=${NB_LOG_LEVEL:-info} /e2e/bin/netbackd --pid-file /run/netbackd.pid > /tmp/netbackd.log 2>&1 &
NB_PID=$!
i=0; while [ ! -s /run/netbackd.pid ] && kill -0 $NB_PID 2>/dev/null && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
[ -s /run/netbackd.pid ]; ok netback-netbackd-start $? "pid $NB_PID: $(tail -1 /tmp/netbackd.log)"
nb_create all 10.0.5.2 00:16:3e:00:05:02
nb_wait all
ok netback-xl-create "$(cat /tmp/nb-all.rc 2>/dev/null || echo 255)" "$(tr '\n' ' ' < /tmp/nb-all.xl | cut -c1-300)"
NB_DID=$(xl domid nb-all 2>/dev/null)
nb_report all; ok netback-connected $? "frontend state=$fe backend state=$be (4 = Connected)"
for k in feature-sg feature-gso-tcpv4 feature-rx-copy feature-split-event-channels multi-queue-max-queues hotplug-status; do
  echo "netback: backend/vif/$NB_DID/0/$k = $(xenstore-read /local/domain/0/backend/vif/$NB_DID/0/$k 2>&1)"
done
for k in request-rx-copy feature-sg feature-gso-tcpv4 feature-rx-notify multi-queue-num-queues event-channel event-channel-tx; do
  echo "netfront: device/vif/0/$k = $(xenstore-read /local/domain/$NB_DID/device/vif/0/$k 2>&1)"
done
L=/var/log/xen/console/guest-nb-all.log
grep -q "nb-all:ping PASS" $L; ok netback-ping $? "$(grep -h 'nb-all:ping ' $L | head -1 | cut -c16-200)"
grep -q "nb-all:ping-large PASS" $L; ok netback-ping-large $? "$(grep -h 'nb-all:ping-large' $L | head -1 | cut -c16-200)"
nb_stop nb-all
i=0; while [ -d /sys/class/net/vif$NB_DID.0 ] && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done
left=$(xenstore-list /local/domain/0/backend/vif 2>/dev/null | tr '\n' ' ')
[ ! -d /sys/class/net/vif$NB_DID.0 ] && [ -z "$left" ]
ok netback-destroy $? "tap vif$NB_DID.0 gone: $([ -d /sys/class/net/vif$NB_DID.0 ] && echo no || echo yes); backend/vif left: ${left:-none}"
kill $NB_PID 2>/dev/null
i=0; while kill -0 $NB_PID 2>/dev/null && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
! kill -0 $NB_PID 2>/dev/null; ok netback-netbackd-stop $? "SIGTERM"
echo "----- netbackd log -----"; tail -20 /tmp/netbackd.log; echo "----- end of netbackd log -----"
echo "----- nb-all console -----"; tail -15 $L; echo "----- end of nb-all console -----"

# ---- 2. the comparison: nb-kernel (xen-netback) and nb-ours (netbackd --domid) ----
echo "E2E-MARK netback-compare uptime=$(up)"
insmod $K/drivers/net/xen-netback/xen-netback.ko; ok netback-reinsmod $? "xen-netback loaded again"
ip link set $NB_BR mtu 1500
nb_create kernel 10.0.5.3 00:16:3e:00:05:03
i=0; while [ ! -s /tmp/nb-kernel.rc ] && [ $i -lt $((DOMU_TIMEOUT * 10)) ]; do usleep 100000; i=$((i+1)); done
# From here on the kernel's driver binds no new device: nb-ours's vif is netbackd's.
echo 0 > $AUTOPROBE
nb_create ours 10.0.5.4 00:16:3e:00:05:04 novif
i=0; while [ ! -s /tmp/nb-ours.rc ] && [ $i -lt $((DOMU_TIMEOUT * 10)) ]; do usleep 100000; i=$((i+1)); done
OD=$(xl domid nb-ours 2>/dev/null)
rm -f /run/netbackd-ours.pid
RUST_LOG=${NB_LOG_LEVEL:-info} /e2e/bin/netbackd --domid "$OD" --pid-file /run/netbackd-ours.pid > /tmp/netbackd-ours.log 2>&1 &
NB_PID=$!
i=0; while [ ! -s /run/netbackd-ours.pid ] && kill -0 $NB_PID 2>/dev/null && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
timeout 60 xl network-attach nb-ours $NB_ATTACH > /tmp/nb-attach.log 2>&1
ok netback-network-attach $? "netbackd --domid $OD; xl network-attach: $(tr '\n' ' ' < /tmp/nb-attach.log)"
nb_wait kernel ours
echo "netback: netbackd --domid $OD CPU before the load: $(awk '{print $14 + $15}' /proc/$NB_PID/stat 2>/dev/null) ticks"
# Which of its threads used it (user, system ticks).
nb_threads() { for t in /proc/$NB_PID/task/*; do echo "$(cat $t/comm 2>/dev/null):$(awk '{print $14 "/" $15}' $t/stat 2>/dev/null)"; done | tr '\n' ' '; }
echo "netback: netbackd threads before the load: $(nb_threads)"
nb_report kernel; ok netback-kernel-connected $? "nb-kernel: frontend state=$fe backend state=$be"
nb_report ours; ok netback-domid-connected $? "nb-ours: frontend state=$fe backend state=$be"
drv=$(readlink /sys/bus/xen-backend/devices/vif-$OD-0/driver 2>/dev/null)
[ -z "$drv" ]; ok netback-kernel-not-bound $? "vif-$OD-0 driver: ${drv:-none}"

# Interleaved rounds: tx = guest → dom0 (dom0 receives from the guest's server), rx = dom0 →
# guest. Each round alternates which backend goes first.
# Where the CPU went during a run: dom0's /proc/stat (one vCPU: busy = not idle), the
# guest's and dom0's CPU seconds from `xl list`, netbackd's user/system ticks.
nb_stat() { # TAG: "dom0-ticks(user nice sys idle iowait irq softirq) guest-secs dom0-secs nbd-utime nbd-stime"
  n="nb-$1"; set -- $(head -1 /proc/stat)
  s="$2 $3 $4 $5 $6 $7 $8"
  g=$(xl list 2>/dev/null | awk -v n="$n" '$1 == n {print $6}')
  z=$(xl list 2>/dev/null | awk '$2 == 0 {print $6}')
  p=$(awk '{print $14, $15}' /proc/$NB_PID/stat 2>/dev/null)
  echo "$s ${g:-0} ${z:-0} ${p:-0 0}"
}
nb_cpu() { # TAG CASE ROUND BEFORE AFTER
  echo "$4 $5" | awk -v t="$1 $2 $3" '{
    tot = 0; for (i = 1; i <= 7; i++) { d[i] = $(i + 11) - $i; tot += d[i] }
    if (tot <= 0) tot = 1
    printf "NB-CPU %s dom0: busy=%d%% usr=%d%% sys=%d%% softirq=%d%% | guest %.1fs dom0 %.1fs | netbackd usr=%d sys=%d ticks\n",
      t, 100 * (tot - d[4]) / tot, 100 * (d[1] + d[2]) / tot, 100 * d[3] / tot, 100 * d[7] / tot,
      $19 - $8, $20 - $9, $21 - $10, $22 - $11 }'
}
nb_run() { # TAG IP CASE ROUND
  case $3 in tx-*) d=recv ;; *) d=send ;; esac
  b=$(nb_stat $1)
  o=$(timeout 60 /e2e/bin/net-load $d --to "$2:5001" --streams "${3#*-}" --ms 2000 2>&1 | tr '\n' ' ')
  a=$(nb_stat $1)
  echo "NB-RUN $1 $3 $4 $o" | tee -a /tmp/nb-runs
  nb_cpu $1 $3 $4 "$b" "$a"
}
rm -f /tmp/nb-runs
for r in 1 2 3; do
  for c in $NB_CASES; do
    if [ $r = 2 ]; then nb_run ours 10.0.5.4 $c $r; nb_run kernel 10.0.5.3 $c $r
    else nb_run kernel 10.0.5.3 $c $r; nb_run ours 10.0.5.4 $c $r; fi
  done
done
nb_median() { # TAG CASE: median Mbit/s of three rounds (integer), or nothing
  sed -n "s/^NB-RUN $1 $2 [0-9] .*mbit_s=\\([0-9.]*\\).*/\\1/p" /tmp/nb-runs | sort -n \
    | awk '{v[NR]=$1} END {if (NR == 3) printf "%d\n", v[2]}'
}
bad=""
for c in $NB_CASES; do
  k=$(nb_median kernel $c); o=$(nb_median ours $c)
  [ -n "$k" ] && echo "E2E-METRIC guest-net-$c:kernel-netback $k Mbit/s"
  [ -n "$o" ] && echo "E2E-METRIC guest-net-$c:netbackd $o Mbit/s"
  if [ -n "$k" ] && [ -n "$o" ] && [ "$k" -gt 0 ]; then
    echo "E2E-METRIC guest-net-$c:netbackd/kernel $(( o * 100 / k )) %"
  else
    bad="$bad $c"
  fi
done
# Ping round trips from dom0, interleaved, median of 20 each.
rm -f /tmp/nb-ping-*
for r in 1 2; do
  for t in kernel:10.0.5.3 ours:10.0.5.4; do
    ping -c 10 -i 0.2 ${t#*:} 2>/dev/null | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' >> /tmp/nb-ping-${t%%:*}
  done
done
for t in kernel:kernel-netback ours:netbackd; do
  v=$(sort -n /tmp/nb-ping-${t%%:*} 2>/dev/null | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}')
  [ -n "$v" ] && echo "E2E-METRIC guest-net-ping-rtt:${t#*:} $v ms"
done
[ -z "$bad" ]; ok netback-compare $? "net-load rounds on both backends; missing:${bad:- none}"
NBT=$(awk '{print $14 + $15}' /proc/$NB_PID/stat 2>/dev/null)
echo "netback: netbackd --domid $OD used $NBT clock ticks of CPU; threads: $(nb_threads)"
nb_stop nb-ours; nb_stop nb-kernel
i=0; while kill -0 $NB_PID 2>/dev/null && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
! kill -0 $NB_PID 2>/dev/null; ok netback-domid-exit $? "netbackd --domid $OD exited once its domain was gone"
echo 1 > $AUTOPROBE
for t in kernel ours; do
  echo "----- nb-$t console -----"; tail -25 /var/log/xen/console/guest-nb-$t.log; echo "----- end of nb-$t console -----"
done
echo "----- netbackd --domid log -----"; tail -20 /tmp/netbackd-ours.log; echo "----- end of netbackd --domid log -----"
