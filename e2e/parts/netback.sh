# Part `netback`: the project's userspace network backend (netbackd) against Linux's
# xen-netfront on real Xen, and against the kernel's xen-netback in the same boot.
#
# 1. A guest whose vif the kernel's xen-netback serves (loaded by dom0's /init): pings and
#    net-load rounds, the peer's figures.
# 2. rmmod xen-netback, start netbackd (every backend/vif of dom0), the same guest again:
#    xl create, both ends Connected, pings (8000-byte ones over MTU 9000: multi-slot frames),
#    the same net-load rounds; then xl destroy removes the tap, netbackd stops, and
#    xen-netback is loaded again for whatever runs after this part.
# Guest side: e2e/guest-parts/netback.sh. Metrics: guest-net-<case>:kernel-netback,
# guest-net-<case>:netbackd, guest-net-<case>:netbackd/kernel (percent).
NB_BR=xenbr0; NB_DOM0=10.0.5.1; NB_GUEST=10.0.5.2; NB_MAC=00:16:3e:00:05:02
K=/lib/modules/$(uname -r)/kernel
NB_CASES="tx-1 tx-4 rx-1 rx-4"

[ -e /dev/net/tun ] || insmod $K/drivers/net/tun.ko
[ -e /dev/net/tun ]; ok netback-tun $? "/dev/net/tun"
[ -d /sys/class/net/$NB_BR ] || brctl addbr $NB_BR
ip addr add $NB_DOM0/24 dev $NB_BR && ip link set $NB_BR up
ok netback-bridge-address $? "$NB_BR $NB_DOM0/24"
/e2e/bin/net-load serve --listen $NB_DOM0:5001 > /tmp/nb-server.log 2>&1 &
NB_SERVER=$!
if [ "$HOTPLUG" = debian ]; then NB_SCRIPT=""; else NB_SCRIPT=",script=/e2e/vif-e2e"; fi

# nb_guest TAG: boots guest nb-TAG, waits for its NB-DONE; raises the vif's and the bridge's
# MTU to 9000 once the vif is Connected. Sets NB_DID, NB_XLRC, NB_FE, NB_BE (states when it
# was done), NB_LOGF.
nb_guest() {
  tag=$1; name=nb-$tag
  cat > /tmp/$name.cfg <<CFG
name = "$name"
type = "pv"
kernel = "/boot/domu-kernel"
ramdisk = "/boot/domu-initrd"
extra = "console=hvc0 rdinit=/init e2e_part=netback nb_ip=$NB_GUEST nb_peer=$NB_DOM0 nb_tag=$tag"
memory = 128
vcpus = 1
$([ -n "$DOMU_CPUS" ] && echo "cpus = \"$DOMU_CPUS\"")
vif = [ 'bridge=$NB_BR,mac=$NB_MAC$NB_SCRIPT' ]
on_poweroff = "destroy"
on_crash = "destroy"
CFG
  NB_LOGF=/var/log/xen/console/guest-$name.log
  rm -f /tmp/$name.rc
  t0=$(cs)
  ( timeout $DOMU_TIMEOUT xl create /tmp/$name.cfg > /tmp/$name.xl 2>&1; echo $? > /tmp/$name.rc ) &
  NB_DID=""; mtu=""; NB_XLRC=""
  while [ $(( $(cs) - t0 )) -lt $((DOMU_TIMEOUT * 100)) ]; do
    grep -q "NB-DONE $tag" $NB_LOGF 2>/dev/null && break
    [ -z "$NB_XLRC" ] && [ -s /tmp/$name.rc ] && read -r NB_XLRC < /tmp/$name.rc
    if [ -n "$NB_XLRC" ] && [ "$NB_XLRC" != 0 ]; then break; fi
    [ -z "$NB_DID" ] && NB_DID=$(xl domid $name 2>/dev/null)
    if [ -n "$NB_DID" ] && [ -z "$mtu" ] \
       && [ "$(xenstore-read /local/domain/0/backend/vif/$NB_DID/0/state 2>/dev/null)" = 4 ]; then
      ip link set vif$NB_DID.0 mtu 9000 && ip link set $NB_BR mtu 9000
      mtu=$?
      echo "netback: vif$NB_DID.0 Connected after $(( ($(cs) - t0) * 10 )) ms; mtu 9000: rc=$mtu"
    fi
    usleep 200000
  done
  [ -z "$NB_XLRC" ] && [ -s /tmp/$name.rc ] && read -r NB_XLRC < /tmp/$name.rc
  NB_FE=$(xenstore-read /local/domain/$NB_DID/device/vif/0/state 2>/dev/null)
  NB_BE=$(xenstore-read /local/domain/0/backend/vif/$NB_DID/0/state 2>/dev/null)
  grep '^E2E-DOMU-CHECK' $NB_LOGF 2>/dev/null | sed 's/^E2E-DOMU-CHECK /E2E-CHECK netback-guest:/'
  grep -E '^NB-(RTT|RUN)' $NB_LOGF 2>/dev/null
}

# nb_stop NAME: xl destroy and wait until the domain is gone.
nb_stop() {
  timeout 60 xl destroy "$1" > /dev/null 2>&1
  i=0; while xl domid "$1" > /dev/null 2>&1 && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
}

# nb_median TAG CASE: median Mbit/s of the guest's three rounds (integer), or nothing.
nb_median() {
  sed -n "s/^NB-RUN $1 $2 [0-9] .*mbit_s=\\([0-9.]*\\).*/\\1/p" /var/log/xen/console/guest-nb-$1.log 2>/dev/null \
    | sort -n | awk '{v[NR]=$1} END {if (NR == 3) printf "%d\n", v[2]}'
}

# ---- 1. the kernel's xen-netback ----
echo "E2E-MARK netback-kernel uptime=$(up)"
nb_guest kernel
[ "$NB_XLRC" = 0 ] && [ "$NB_FE" = 4 ] && [ "$NB_BE" = 4 ] && grep -q "NB-DONE kernel" $NB_LOGF
ok netback-kernel-guest $? "xl create rc=$NB_XLRC; frontend state=$NB_FE backend state=$NB_BE"
nb_stop nb-kernel

# ---- 2. netbackd ----
echo "E2E-MARK netback-ours uptime=$(up)"
rmmod xen-netback; rc=$?
[ ! -d /sys/module/xen_netback ] && [ $rc = 0 ]; ok netback-rmmod $? "rmmod xen-netback rc=$rc"
rm -f /run/netbackd.pid
RUST_LOG=${NB_LOG_LEVEL:-info} /e2e/bin/netbackd --pid-file /run/netbackd.pid > /tmp/netbackd.log 2>&1 &
NB_PID=$!
i=0; while [ ! -s /run/netbackd.pid ] && kill -0 $NB_PID 2>/dev/null && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
[ -s /run/netbackd.pid ]; ok netback-netbackd-start $? "pid $NB_PID: $(tail -1 /tmp/netbackd.log)"
t0=$(cs)
nb_guest ours
ok netback-xl-create "${NB_XLRC:-255}" "$(tr '\n' ' ' < /tmp/nb-ours.xl | cut -c1-300)"
[ "$NB_FE" = 4 ] && [ "$NB_BE" = 4 ]
ok netback-connected $? "frontend state=$NB_FE backend state=$NB_BE (4 = Connected)"
for k in feature-sg feature-gso-tcpv4 feature-rx-copy feature-split-event-channels multi-queue-max-queues hotplug-status; do
  echo "netback: backend/vif/$NB_DID/0/$k = $(xenstore-read /local/domain/0/backend/vif/$NB_DID/0/$k 2>&1)"
done
for k in request-rx-copy feature-sg feature-gso-tcpv4 feature-rx-notify multi-queue-num-queues event-channel event-channel-tx; do
  echo "netfront: device/vif/0/$k = $(xenstore-read /local/domain/$NB_DID/device/vif/0/$k 2>&1)"
done
grep -q "nb-ours:ping PASS" $NB_LOGF; ok netback-ping $? "$(grep -h 'nb-ours:ping ' $NB_LOGF | head -1 | cut -c1-200)"
grep -q "nb-ours:ping-large PASS" $NB_LOGF; ok netback-ping-large $? "$(grep -h 'nb-ours:ping-large' $NB_LOGF | head -1 | cut -c1-200)"
rx=$(cat /sys/class/net/vif$NB_DID.0/statistics/rx_packets 2>/dev/null)
tx=$(cat /sys/class/net/vif$NB_DID.0/statistics/tx_packets 2>/dev/null)
echo "netback: /sys/class/net/vif$NB_DID.0: rx_packets=$rx tx_packets=$tx"
nb_stop nb-ours
i=0; while [ -d /sys/class/net/vif$NB_DID.0 ] && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done
left=$(xenstore-list /local/domain/0/backend/vif 2>/dev/null | tr '\n' ' ')
[ ! -d /sys/class/net/vif$NB_DID.0 ] && [ -z "$left" ]
ok netback-destroy $? "tap vif$NB_DID.0 gone: $([ -d /sys/class/net/vif$NB_DID.0 ] && echo no || echo yes); backend/vif left: ${left:-none}"
kill $NB_PID 2>/dev/null
i=0; while kill -0 $NB_PID 2>/dev/null && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
! kill -0 $NB_PID 2>/dev/null; ok netback-netbackd-stop $? "SIGTERM"
echo "----- netbackd log -----"; tail -40 /tmp/netbackd.log; echo "----- end of netbackd log -----"
echo "----- nb-ours console -----"; tail -30 $NB_LOGF; echo "----- end of nb-ours console -----"

# ---- the comparison ----
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
for s in small large; do
  for t in kernel ours; do
    v=$(sed -n "s/^NB-RTT $t $s \\([0-9.]*\\).*/\\1/p" /var/log/xen/console/guest-nb-$t.log 2>/dev/null | head -1)
    n=$t; [ $t = kernel ] && n=kernel-netback; [ $t = ours ] && n=netbackd
    [ -n "$v" ] && echo "E2E-METRIC guest-net-ping-$s-rtt:$n $v ms"
  done
done
[ -z "$bad" ]; ok netback-compare $? "net-load rounds on both backends; missing:${bad:- none}"

# ---- leave dom0 as it was: the kernel's netback for later parts ----
kill $NB_SERVER 2>/dev/null
insmod $K/drivers/net/xen-netback/xen-netback.ko; ok netback-reinsmod $? "xen-netback loaded again"
