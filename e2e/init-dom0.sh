#!/bin/busybox sh
# dom0 /init for `cargo xtask e2e` (embedded into the dom0 initramfs by xtask).
#
# Protocol with the host (one line each, on the serial console):
#   E2E-CHECK <name> PASS|FAIL <detail>      a check
#   E2E-TEST <binary>::<test> PASS|FAIL|SKIP [reason]
#                                            one #[ignore]d real-Xen test; SKIP when it exited 0
#                                            after printing `E2E-SKIP <reason>` (the host fails
#                                            the run unless that test is allowed to skip)
#   E2E-METRIC <name> <value> <unit>         a peer measurement
#   E2E-XSBENCH <xenstored> <line>           a line of test-xenstore's output
#   E2E-DONE                                 everything ran; dom0 powers off next
/bin/busybox --install -s /bin
export PATH=/usr/lib/xen-4.17/bin:/bin:/sbin:/usr/bin:/usr/sbin
XENSTORED=c; XS_ITERS=0; DOMU=1; TEST_TIMEOUT=120; HOTPLUG=e2e; DOMU_TIMEOUT=420; DOMU_CPUS=""
. /e2e/env

up() { cut -d' ' -f1 /proc/uptime; }
# Hundredths of a second since boot, for differences.
# (Shell builtins only: an external helper that crashes must not break the arithmetic.)
cs() {
  read -r u _ < /proc/uptime; u=${u%%.*}${u#*.}
  while [ "${u#0}" != "$u" ]; do u=${u#0}; done
  echo "${u:-0}"
}
check() { n=$1; r=$2; shift 2; echo "E2E-CHECK $n $r $*"; }
ok() { if [ "$2" = 0 ]; then check "$1" PASS "$3"; else check "$1" FAIL "rc=$2 $3"; fi; }
# want PART: whether this run includes PART (`cargo xtask e2e --only`; everything without it).
want() {
  [ -z "$E2E_ONLY" ] && return 0
  case "$E2E_ONLY" in *",$1,"*) return 0 ;; esac
  case "$1" in tests:*) want tests ;; *) return 1 ;; esac
}

mkdir -p /proc /sys /dev /run /tmp /var/log/xen/console /var/lib/xen /var/lib/xenstored /var/lock
ln -sfn /run /var/run
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
mkdir -p /run/xen /run/xenstored /run/lock
echo "E2E-MARK dom0-userspace uptime=$(up)"

K=/lib/modules/$(uname -r)/kernel
for m in drivers/xen/xen-privcmd drivers/xen/xenfs/xenfs drivers/xen/xen-evtchn drivers/xen/xen-gntdev \
         drivers/xen/xen-gntalloc drivers/block/xen-blkback/xen-blkback drivers/net/xen-netback/xen-netback \
         drivers/block/loop net/llc/llc net/802/stp net/bridge/bridge; do
  insmod $K/$m.ko || check "insmod:${m##*/}" FAIL "insmod failed"
done
mkdir -p /proc/xen; mount -t xenfs xenfs /proc/xen
grep -q control_d /proc/xen/capabilities; ok dom0-privileged $? "caps=$(cat /proc/xen/capabilities)"

start_xenstored() {
  case "$1" in
    ours) /e2e/bin/xenstored --pid-file /run/xenstored.pid $XENSTORED_OURS_ARGS ;;
    *) xenstored --pid-file /run/xenstored.pid ;;
  esac
  i=0; while [ ! -S /run/xenstored/socket ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
  [ -S /run/xenstored/socket ]
}
start_xenstored "$XENSTORED"; ok "xenstored-start:$XENSTORED" $? "socket=/run/xenstored/socket"
xen-init-dom0 > /tmp/init-dom0.log 2>&1; ok xen-init-dom0 $? "$(tail -1 /tmp/init-dom0.log)"
# XENCONSOLED=ours: the project's xenconsoled (same options, detaches as the C one does).
case "$XENCONSOLED" in
  ours) XENCONSOLED_BIN=/e2e/bin/xenconsoled ;;
  *) XENCONSOLED_BIN=xenconsoled ;;
esac
$XENCONSOLED_BIN --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
rc=$?
i=0; while [ $rc = 0 ] && [ ! -s /run/xenconsoled.pid ] && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done
[ $rc = 0 ] && [ -s /run/xenconsoled.pid ]; ok "xenconsoled:${XENCONSOLED:-c}" $? "$XENCONSOLED_BIN pid $(cat /run/xenconsoled.pid 2>/dev/null)"
echo "E2E-MARK daemons-up uptime=$(up)"

xl info > /tmp/xl-info 2>&1; rc=$?
ok xl-info $rc "$(grep -E '^xen_version' /tmp/xl-info | tr -s ' ')"
[ $rc = 0 ] || cat /tmp/xl-info
xenstore-read /local/domain/0/name > /tmp/d0name 2>&1; rc=$?
[ "$(cat /tmp/d0name)" = Domain-0 ] || rc=1
ok xenstore-dom0-name $rc "read=$(cat /tmp/d0name)"

# ---- the project's real-Xen tests: every #[ignore]d test of every tests/real_xen.rs ----
export RUST_BACKTRACE=1
for t in /e2e/tests/*; do
  [ -x "$t" ] || continue
  b=${t##*/}
  want "tests:$b" || continue
  if ! "$t" --list --ignored > /tmp/list 2>&1; then
    cat /tmp/list; check "list:$b" FAIL "the test binary would not list its tests"; continue
  fi
  sed -n 's/: test$//p' /tmp/list > /tmp/names
  [ -s /tmp/names ] || check "list:$b" FAIL "no #[ignore]d tests in tests/real_xen.rs"
  while read -r n; do
    echo "E2E-RUN $b::$n"
    # Streamed to the console as it runs, and kept to look for the test's SKIP line.
    { timeout $TEST_TIMEOUT "$t" --ignored --exact "$n" --test-threads=1 --nocapture < /dev/null
      echo $? > /tmp/test.rc; } 2>&1 | tee /tmp/test.out
    rc=$(cat /tmp/test.rc 2>/dev/null); rc=${rc:-255}
    skip=$(sed -n 's/.*E2E-SKIP //p' /tmp/test.out | head -n 1)
    if [ $rc != 0 ]; then echo "E2E-TEST $b::$n FAIL rc=$rc"
    elif grep -q 'E2E-SKIP ' /tmp/test.out; then echo "E2E-TEST $b::$n SKIP ${skip:-no reason given}"
    else echo "E2E-TEST $b::$n PASS"; fi
  done < /tmp/names
done
echo "E2E-MARK tests-done uptime=$(up)"

# The bridge the guests' vifs join (the xl guest below and the parts).
if [ "$DOMU" = 1 ]; then
  brctl addbr xenbr0 && ip link set xenbr0 up; ok bridge $? "xenbr0"
fi

# ---- a PV guest with a blkback disk and a netback vif ----
if [ "$DOMU" = 1 ] && want xl-domu; then
  # xvda: the kernel's blkback on loop0. xvdb: the project's blkbackd (backendtype=qdisk) on
  # loop1, filled with random bytes the guest reads back. Same size and backing for both, so
  # the guest's dd workloads compare the two backends.
  dd if=/dev/zero of=/tmp/disk.img bs=1M count=16 2>/dev/null
  losetup /dev/loop0 /tmp/disk.img; ok loop-device $? ""
  dd if=/dev/urandom of=/tmp/ours.img bs=1M count=16 2>/dev/null
  OURS_MD5=$(md5sum < /tmp/ours.img | cut -d' ' -f1)
  losetup /dev/loop1 /tmp/ours.img; ok loop-device:ours $? ""
  if [ "$HOTPLUG" = debian ]; then DISK_SCRIPT=""; VIF_SCRIPT=""; else
    DISK_SCRIPT="script=/e2e/block-e2e,"; VIF_SCRIPT=",script=/e2e/vif-e2e"; fi
  cat > /tmp/domu.cfg <<CFG
name = "domu1"
type = "pv"
kernel = "/boot/domu-kernel"
ramdisk = "/boot/domu-initrd"
extra = "console=hvc0 rdinit=/init"
memory = 128
vcpus = 1
$([ -n "$DOMU_CPUS" ] && echo "cpus = \"$DOMU_CPUS\"")
disk = [ 'format=raw, vdev=xvda, access=w, $DISK_SCRIPT target=/dev/loop0' ]
vif = [ 'bridge=xenbr0$VIF_SCRIPT' ]
on_poweroff = "destroy"
on_crash = "destroy"
CFG
  LOG=/var/log/xen/console/guest-domu1.log
  echo "E2E-MARK xl-create-start uptime=$(up)"
  t0=$(cs)
  # xl's log goes to the console with time stamps: it shows where creation spends its time.
  ( timeout $DOMU_TIMEOUT xl -vv create /tmp/domu.cfg 2>&1; echo $? > /tmp/xl-create.rc ) | tee /tmp/xl-create.log | sed 's/^/xl: /' &
  XLPID=$!
  # First console line of the guest (xenconsoled logs it), then its user space marker.
  first=""; upm=""; usm=""; attached=""
  while [ $(( $(cs) - t0 )) -lt $((DOMU_TIMEOUT * 100)) ]; do
    [ -z "$first" ] && [ -s $LOG ] && first=$(cs)
    [ -z "$usm" ] && grep -q E2E-DOMU-USERSPACE $LOG 2>/dev/null && usm=$(cs)
    if grep -q E2E-DOMU-UP $LOG 2>/dev/null; then upm=$(cs); break; fi
    # xl gave up: no guest is coming.
    # (Read with the shell's builtin: a crashing helper process must not look like xl failing.)
    rc=""; [ -s /tmp/xl-create.rc ] && read -r rc < /tmp/xl-create.rc
    if [ -n "$rc" ] && [ "$rc" != 0 ]; then break; fi
    # Once xl create is done, start blkbackd as the guest's device model (the role of the
    # QEMU libxl starts for qdisk disks) and hot-plug the second disk: libxl checks that a
    # device model runs, writes backend/qdisk/<domid>/51728 and waits for InitWait.
    if [ "$rc" = 0 ] && [ -z "$attached" ]; then
      attached=1; a0=$(cs)
      /e2e/bin/blkbackd --domid "$(xl domid domu1)" --pid-file /run/blkbackd.pid > /tmp/blkbackd.log 2>&1 &
      i=0; while [ ! -s /run/blkbackd.pid ] && [ $i -lt 100 ]; do usleep 50000; i=$((i+1)); done
      [ -s /run/blkbackd.pid ]; ok blkbackd-start $? "device model of domain $(xl domid domu1): backend/qdisk/$(xl domid domu1)"
      timeout 60 xl block-attach domu1 'format=raw, vdev=xvdb, access=w, backendtype=qdisk, target=/dev/loop1' > /tmp/block-attach.log 2>&1
      ok block-attach:qdisk $? "xl block-attach backendtype=qdisk in $(( ($(cs) - a0) * 10 )) ms $(tr '\n' ' ' < /tmp/block-attach.log)"
    fi
    usleep 50000
  done
  wait $XLPID; xlrc=$(cat /tmp/xl-create.rc 2>/dev/null || echo 255)
  t1=$(cs)
  ok xl-create $xlrc "$(grep -c . /tmp/xl-create.log) lines of xl -vv output"
  if [ -n "$first" ]; then
    echo "E2E-METRIC xl-create-to-first-console-line $(( (first - t0) * 10 )) ms"
    check domu-console PASS "first line after $(( (first - t0) * 10 )) ms"
  else
    check domu-console FAIL "no console output from the guest"
  fi
  [ -n "$usm" ] && echo "E2E-METRIC xl-create-to-guest-userspace $(( (usm - t0) * 10 )) ms"
  [ -n "$upm" ] && echo "E2E-METRIC xl-create-to-guest-checks-done $(( (upm - t0) * 10 )) ms"
  DID=$(xl domid domu1 2>/dev/null)
  if [ -n "$upm" ] && [ -n "$DID" ]; then
    for dev in vbd/51712 vif/0; do
      fe=$(xenstore-read /local/domain/$DID/device/$dev/state 2>/dev/null)
      be=$(xenstore-read /local/domain/0/backend/${dev%/*}/$DID/${dev#*/}/state 2>/dev/null)
      [ "$fe" = 4 ] && [ "$be" = 4 ]; ok "frontend-connected:${dev%/*}" $? "frontend state=$fe backend state=$be (4 = Connected)"
    done
    fe=$(xenstore-read /local/domain/$DID/device/vbd/51728/state 2>/dev/null)
    be=$(xenstore-read /local/domain/0/backend/qdisk/$DID/51728/state 2>/dev/null)
    [ "$fe" = 4 ] && [ "$be" = 4 ]; ok "frontend-connected:qdisk" $? "blkbackd: frontend state=$fe backend state=$be (4 = Connected)"
    for k in feature-persistent feature-max-indirect-segments multi-queue-max-queues max-ring-page-order sectors; do
      echo "blkbackd: backend/qdisk/$DID/51728/$k = $(xenstore-read /local/domain/0/backend/qdisk/$DID/51728/$k 2>&1)"
    done
    for k in protocol ring-page-order multi-queue-num-queues feature-persistent; do
      echo "blkfront: device/vbd/51728/$k = $(xenstore-read /local/domain/$DID/device/vbd/51728/$k 2>&1)"
    done
  else
    check frontend-connected:vbd FAIL "guest user space never came up"
    check frontend-connected:vif FAIL "guest user space never came up"
    check frontend-connected:qdisk FAIL "guest user space never came up"
  fi
  # The console daemon: the guest's boot messages in its log, and `xl console` reading the
  # guest through the pty the daemon published in console/tty (the guest prints a heartbeat
  # once its checks are done; xenconsole is not interactive without a terminal).
  grep -q 'Linux version' $LOG 2>/dev/null
  ok "console-log:${XENCONSOLED:-c}" $? "$(grep -c . $LOG 2>/dev/null) lines in $LOG"
  if [ -n "$DID" ]; then
    tty=$(xenstore-read /local/domain/$DID/console/tty 2>/dev/null)
    timeout 5 xl console domu1 < /dev/null > /tmp/xl-console.out 2>&1
    grep -q 'E2E-DOMU-ALIVE' /tmp/xl-console.out
    ok "xl-console:${XENCONSOLED:-c}" $? "console/tty=$tty; $(wc -c < /tmp/xl-console.out) bytes read by xl console"
  else
    check "xl-console:${XENCONSOLED:-c}" FAIL "no guest"
  fi
  grep '^E2E-DOMU-CHECK' $LOG 2>/dev/null | sed 's/^E2E-DOMU-CHECK /E2E-CHECK domu:/'
  grep '^E2E-DOMU-METRIC' $LOG 2>/dev/null | sed 's/^E2E-DOMU-METRIC /E2E-METRIC /'
  grep -E '^(kernel|ours): ' $LOG 2>/dev/null | sed 's/^/guest /'
  rsum=$(sed -n 's/^E2E-DOMU-MD5 xvdb-read \([0-9a-f]*\).*/\1/p' $LOG 2>/dev/null)
  [ -n "$rsum" ] && [ "$rsum" = "$OURS_MD5" ]; ok blkbackd-guest-read $? "md5 of the 16 MiB disk read by the guest: ${rsum:-none}, written by dom0: $OURS_MD5"
  wsum=$(sed -n 's/^E2E-DOMU-MD5 xvdb-write \([0-9a-f]*\).*/\1/p' $LOG 2>/dev/null)
  timeout 60 xl destroy domu1 > /dev/null 2>&1
  i=0; while xl domid domu1 > /dev/null 2>&1 && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
  echo 3 > /proc/sys/vm/drop_caches
  got=$(dd if=/dev/loop0 bs=64 count=1 2>/dev/null | tr -d '\000\n')
  [ "$got" = HELLO-FROM-DOMU-VIA-BLKBACK ]; ok domu-disk-write $? "read back from the backing loop device: '$got'"
  # What the guest wrote through blkbackd is on the image (1 MiB at 4 MiB).
  isum=$(dd if=/dev/loop1 bs=64k skip=64 count=16 2>/dev/null | md5sum | cut -d' ' -f1)
  [ -n "$wsum" ] && [ "$isum" = "$wsum" ]; ok blkbackd-guest-write $? "md5 of 1 MiB the guest wrote: ${wsum:-none}, on the image: $isum"
  # xl destroy stopped the device model (SIGHUP) and removed the qdisk directories.
  i=0; while [ -e /run/blkbackd.pid ] && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done
  n=$(xenstore-ls /local/domain/0/backend/qdisk 2>/dev/null | grep -c .)
  [ ! -e /run/blkbackd.pid ] && [ "$n" = 0 ]
  ok blkbackd-stop $? "after xl destroy: daemon exited: $([ -e /run/blkbackd.pid ] && echo no || echo yes), $n nodes left under backend/qdisk"
  echo "----- blkbackd log -----"; tail -20 /tmp/blkbackd.log; echo "----- end of blkbackd log -----"
  echo "----- guest console -----"; tail -40 $LOG; echo "----- end of guest console -----"
  if [ -s /var/log/xen/xen-hotplug.log ]; then grep -iE 'error|fail' /var/log/xen/xen-hotplug.log | tail -20; fi
  echo "E2E-MARK domu-done uptime=$(up)"
fi

# ---- the project's xapi on real Xen, driven by xe: a PV guest with a disk and a vif ----
# xapi starts blkbackd as the guest's device model for its disk (backend/qdisk), runs the vif
# script once netback waits, and xenconsoled logs the console. Same guest kernel and initramfs
# as the xl guest above, for the side-by-side timing.
if [ "$DOMU" = 1 ] && [ -x /e2e/bin/xapi ] && [ -x /e2e/bin/xe ] && want xapi; then
  echo "E2E-MARK xapi-start uptime=$(up)"
  XS=/tmp/xapi-state; mkdir -p $XS
  start_xapi() {
    # A fresh log per start: "ready" is this run's.
    [ -e /tmp/xapi.log ] && cat /tmp/xapi.log >> /tmp/xapi-earlier.log && rm -f /tmp/xapi.log
    RUST_LOG=toolstack=info /e2e/bin/xapi --hypervisor real --discover --state-dir $XS --root-password e2e \
      --listen none --https-listen 0.0.0.0:443 --vif-script /e2e/vif-e2e --blkbackd /e2e/bin/blkbackd \
      --clean-shutdown-timeout 60 >> /tmp/xapi.log 2>&1 &
    XAPI_PID=$!
    i=0; while ! grep -q '^ready' /tmp/xapi.log 2>/dev/null && kill -0 $XAPI_PID 2>/dev/null && [ $i -lt 300 ]; do usleep 100000; i=$((i+1)); done
    grep -q '^ready' /tmp/xapi.log
  }
  xe() { timeout 180 /e2e/bin/xe -pw e2e "$@"; }
  start_xapi; ok xapi-start $? "xapi --hypervisor real: $(grep -m1 '^hypervisor' /tmp/xapi.log)"
  # What one xe call costs here: the program alone (usage, no connection), then a call.
  t=$(cs); /e2e/bin/xe > /dev/null 2>&1; echo "E2E-METRIC xe-no-connection $(( ($(cs) - t) * 10 )) ms"
  t=$(cs); SR=$(xe sr-list --minimal | cut -d, -f1)
  echo "E2E-METRIC xe-sr-list $(( ($(cs) - t) * 10 )) ms"
  NET=$(xe network-create name-label=guests)
  BR=$(xe network-list uuid="$NET" params=bridge --minimal)
  # xcp-networkd's part: the network's bridge.
  brctl addbr "$BR" && ip link set "$BR" up; ok xapi-network $? "network $NET on bridge $BR"
  dd if=/dev/zero of=/tmp/xapi-disk.img bs=1M count=16 2>/dev/null
  # A second disk for the kernel's blkback (it serves block devices: a loop device), asked
  # for by the VBD (other-config:backend-kind=vbd, the key xenopsd honours); dom0 writes a
  # marker the guest reads.
  dd if=/dev/zero of=/tmp/xapi-kdisk.img bs=1M count=8 2>/dev/null
  KMARK=XAPI-KERNEL-BLKBACK-DISK-FROM-DOM0
  echo $KMARK | dd of=/tmp/xapi-kdisk.img conv=notrunc 2>/dev/null
  KLOOP=$(losetup -f 2>&1) && losetup "$KLOOP" /tmp/xapi-kdisk.img
  VM=$(xe vm-create name-label=xapi-guest memory=128 PV-kernel=/boot/domu-kernel \
       PV-ramdisk=/boot/domu-initrd "PV-args=console=hvc0 rdinit=/init e2e=xapi e2e_kbd" 2>&1) \
    && VDI=$(xe vdi-create sr-uuid="$SR" name-label=disk virtual-size=16777216 sm-config:path=/tmp/xapi-disk.img 2>&1) \
    && VBD=$(xe vbd-create vm-uuid="$VM" vdi-uuid="$VDI" device=0 2>&1) \
    && KVDI=$(xe vdi-create sr-uuid="$SR" name-label=kdisk virtual-size=8388608 sm-config:path="$KLOOP" 2>&1) \
    && KVBD=$(xe vbd-create vm-uuid="$VM" vdi-uuid="$KVDI" device=1 other-config:backend-kind=vbd 2>&1) \
    && VIF=$(xe vif-create vm-uuid="$VM" network-uuid="$NET" device=0 mac=00:16:3e:00:00:42 2>&1)
  ok xe-vm-create $? "vm $VM vdi $VDI vbd $VBD kernel-blkback vdi $KVDI on $KLOOP vbd $KVBD vif $VIF"
  XLOG=/var/log/xen/console/guest-xapi-guest.log
  # xe vm-start in the background while the console log is watched, as for xl create above.
  t0=$(cs)
  ( xe vm-start vm=xapi-guest > /tmp/xe-start.log 2>&1; echo $? > /tmp/xe-start.rc ) &
  XEPID=$!
  usm=""; upm=""; ret=""
  while [ $(( $(cs) - t0 )) -lt $((DOMU_TIMEOUT * 100)) ]; do
    [ -z "$ret" ] && [ -s /tmp/xe-start.rc ] && ret=$(cs)
    [ -z "$usm" ] && grep -q E2E-DOMU-USERSPACE $XLOG 2>/dev/null && usm=$(cs)
    if grep -q E2E-DOMU-UP $XLOG 2>/dev/null; then upm=$(cs); break; fi
    rc=""; [ -s /tmp/xe-start.rc ] && read -r rc < /tmp/xe-start.rc
    if [ -n "$rc" ] && [ "$rc" != 0 ]; then break; fi
    usleep 50000
  done
  wait $XEPID; rc=$(cat /tmp/xe-start.rc 2>/dev/null || echo 255)
  ok xe-vm-start $rc "returned after $(( (${ret:-$(cs)} - t0) * 10 )) ms $(tr '\n' ' ' < /tmp/xe-start.log)"
  if [ -n "$usm" ]; then
    echo "E2E-METRIC xapi-vm-start-to-guest-userspace $(( (usm - t0) * 10 )) ms"
    check xapi-guest-userspace PASS "console log $XLOG after $(( (usm - t0) * 10 )) ms"
  else
    check xapi-guest-userspace FAIL "no E2E-DOMU-USERSPACE in $XLOG"
  fi
  XDID=$(xe vm-list name-label=xapi-guest params=domid --minimal)
  ps=$(xe vm-list name-label=xapi-guest params=power-state --minimal)
  [ "$ps" = running ] && [ -n "$XDID" ] && [ "$XDID" != -1 ]; ok xapi-vm-running $? "power-state=$ps domid=$XDID"
  grep '^E2E-DOMU-CHECK' $XLOG 2>/dev/null | sed 's/^E2E-DOMU-CHECK /E2E-CHECK domu:/'
  # The guest's /init wrote guest-agent keys (data/os_*, attr/vif/0/ipv4/0, data/updated).
  i=0; while ! xenstore-exists /local/domain/$XDID/data/updated 2>/dev/null && [ $i -lt 300 ]; do usleep 100000; i=$((i+1)); done
  ga="$(xenstore-read /local/domain/$XDID/data/os_uname 2>/dev/null) $(xenstore-read /local/domain/$XDID/attr/vif/0/ipv4/0 2>/dev/null)"
  xenstore-exists /local/domain/$XDID/data/updated; ok xapi-guest-agent-keys $? "guest wrote: $ga"
  DMPID=$(xenstore-read /local/domain/$XDID/image/device-model-pid 2>/dev/null)
  [ -n "$DMPID" ] && kill -0 "$DMPID" 2>/dev/null; ok xapi-blkbackd-running $? "device model of domain $XDID: pid ${DMPID:-none}"
  if [ -n "$upm" ]; then
    for dev in vbd/51712:qdisk vbd/51728:vbd vif/0:vif; do
      d=${dev%%:*}; bt=${dev#*:}
      fe=$(xenstore-read /local/domain/$XDID/device/$d/state 2>/dev/null)
      be=$(xenstore-read /local/domain/0/backend/$bt/$XDID/${d#*/}/state 2>/dev/null)
      [ "$fe" = 4 ] && [ "$be" = 4 ]; ok "xapi-frontend-connected:$bt" $? "$d: frontend state=$fe backend state=$be (4 = Connected)"
    done
  fi
  # The second VBD asked for the kernel's blkback: its backend directory is backend/vbd
  # (type=phy, the block script's physical-device), none under backend/qdisk; the guest read
  # dom0's marker from it (its console says what it read and that it wrote its own).
  KB=/local/domain/0/backend/vbd/$XDID/51728
  kty=$(xenstore-read $KB/type 2>/dev/null); kpd=$(xenstore-read $KB/physical-device 2>/dev/null)
  kfe=$(xenstore-read /local/domain/$XDID/device/vbd/51728/backend 2>/dev/null)
  kq=0; xenstore-exists /local/domain/0/backend/qdisk/$XDID/51728 2>/dev/null && kq=1
  krd=$(grep -a -o 'E2E-DOMU-KBD-READ [^ ]*' $XLOG 2>/dev/null | tail -1 | awk '{print $2}' | tr -d '\r')
  kwr=$(grep -a -c 'E2E-DOMU-KBD-WROTE' $XLOG 2>/dev/null)
  [ "$kty" = phy ] && [ -n "$kpd" ] && [ "$kfe" = "$KB" ] && [ $kq = 0 ] && [ "$krd" = "$KMARK" ] && [ "${kwr:-0}" -gt 0 ]
  ok xapi-kernel-blkback-vbd $? "xvdb's frontend names $kfe (type=$kty physical-device=$kpd of $KLOOP; under backend/qdisk: $kq); the guest read '${krd:-nothing}' and wrote $kwr time(s)"

  # Fault: kill -9 xapi while the VM runs; the restarted xapi still has it Running, same domid.
  kill -9 $XAPI_PID; wait $XAPI_PID 2>/dev/null
  start_xapi; rc=$?
  ps=$(xe vm-list name-label=xapi-guest params=power-state --minimal)
  d2=$(xe vm-list name-label=xapi-guest params=domid --minimal)
  [ $rc = 0 ] && [ "$ps" = running ] && [ "$d2" = "$XDID" ]
  ok xapi-restart-keeps-vm $? "after kill -9 and restart: power-state=$ps domid=$d2 (was $XDID)"

  # Suspend and resume (`xl save`/`xl restore`: libxenguest's save stream): the guest
  # acknowledges control/shutdown=suspend and suspends itself, xapi saves it to
  # $XS/suspend and destroys its domain; the resume restores it into a new domain with its
  # devices plugged again, and the guest's console counter goes on from where it was.
  counter() { grep -a -o 'E2E-COUNTER [0-9]*' $XLOG 2>/dev/null | tail -1 | awk '{print $2}'; }
  i=0; while [ -z "$(counter)" ] && [ $i -lt 300 ]; do usleep 100000; i=$((i+1)); done
  OLDDID=$XDID; OLDDM=$DMPID; ups=$(grep -c E2E-DOMU-UP $XLOG); c0=$(counter)
  t=$(cs); xe vm-suspend vm=xapi-guest > /tmp/xe-suspend.log 2>&1; rc=$?; rcs=$rc; ts=$(( ($(cs) - t) * 10 ))
  ps=$(xe vm-list name-label=xapi-guest params=power-state --minimal)
  # The image is in the VM's suspend VDI, a VDI of type suspend in the suspend SR.
  SV=$(xe vm-list name-label=xapi-guest params=suspend-VDI --minimal)
  svt=$(xe vdi-list uuid="$SV" params=type --minimal 2>/dev/null)
  svsr=$(xe vdi-list uuid="$SV" params=sr-uuid --minimal 2>/dev/null)
  psr=$(xe pool-list params=suspend-image-SR --minimal 2>/dev/null)
  img=$(ls -l $XS/sr/$SV.qcow2 2>&1 | awk '{print $5}')
  gone=1; xl list 2>/dev/null | awk '{print $2}' | grep -qx "$OLDDID" && gone=0
  [ $rc = 0 ] && [ "$ps" = suspended ] && [ $gone = 1 ]
  ok xapi-vm-suspend $? "xe returned after $ts ms; power-state=$ps; domain $OLDDID gone: $gone; $(tr '\n' ' ' < /tmp/xe-suspend.log)"
  [ $rc = 0 ] && [ "$svt" = suspend ] && [ -n "$svsr" ] && [ "$svsr" = "$psr" ] && [ -n "$img" ] && [ "$img" -gt 0 ] 2>/dev/null
  ok xapi-suspend-vdi $? "suspend-VDI $SV: type ${svt:-none} in SR ${svsr:-none} (pool suspend-image-SR ${psr:-none}), image $XS/sr/$SV.qcow2 of ${img:-no} bytes"
  [ $rc = 0 ] && echo "E2E-METRIC xapi-vm-suspend $ts ms"
  c1=$(counter)
  t=$(cs); xe vm-resume vm=xapi-guest > /tmp/xe-resume.log 2>&1; rc=$?; rcr=$rc; tres=$(( ($(cs) - t) * 10 ))
  ps=$(xe vm-list name-label=xapi-guest params=power-state --minimal)
  XDID=$(xe vm-list name-label=xapi-guest params=domid --minimal)
  [ $rc = 0 ] && [ "$ps" = running ] && [ -n "$XDID" ] && [ "$XDID" != -1 ] && [ "$XDID" != "$OLDDID" ]
  ok xapi-vm-resume $? "xe returned after $tres ms; power-state=$ps domid $OLDDID -> $XDID; $(tr '\n' ' ' < /tmp/xe-resume.log)"
  [ $rc = 0 ] && echo "E2E-METRIC xapi-vm-resume $tres ms"
  sv2=$(xe vm-list name-label=xapi-guest params=suspend-VDI --minimal)
  svleft=$(xe vdi-list uuid="$SV" --minimal 2>/dev/null)
  [ $rc = 0 ] && [ -n "$SV" ] && [ "$sv2" = "<not in database>" ] && [ -z "$svleft" ] && [ ! -e "$XS/sr/$SV.qcow2" ]
  ok xapi-suspend-vdi-destroyed $? "after resume: suspend-VDI ${sv2:-none}; VDI $SV listed: ${svleft:-no}; image file left: $([ -e "$XS/sr/$SV.qcow2" ] && echo yes || echo no)"
  i=0; while c=$(counter); [ "${c:-0}" -le "${c1:-0}" ] && [ $i -lt $((DOMU_TIMEOUT * 10)) ]; do usleep 100000; i=$((i+1)); done
  c2=$(counter)
  [ $rcs = 0 ] && [ $rcr = 0 ] && [ -n "$c1" ] && [ "${c2:-0}" -gt "$c1" ] && [ "$(grep -c E2E-DOMU-UP $XLOG)" = "$ups" ]
  ok xapi-guest-counter-continues $? "counter $c0 before suspend, $c1 while suspended, $c2 after resume; booted $(grep -c E2E-DOMU-UP $XLOG) times (was $ups)"
  DMPID=$(xenstore-read /local/domain/$XDID/image/device-model-pid 2>/dev/null)
  i=0; while [ $i -lt 300 ]; do
    fe=$(xenstore-read /local/domain/$XDID/device/vbd/51712/state 2>/dev/null)
    fk=$(xenstore-read /local/domain/$XDID/device/vbd/51728/state 2>/dev/null)
    fv=$(xenstore-read /local/domain/$XDID/device/vif/0/state 2>/dev/null)
    [ "$fe" = 4 ] && [ "$fk" = 4 ] && [ "$fv" = 4 ] && break; usleep 100000; i=$((i+1))
  done
  [ "$fe" = 4 ] && [ "$fk" = 4 ] && [ "$fv" = 4 ] && [ -n "$DMPID" ] && [ "$DMPID" != "$OLDDM" ] && kill -0 "$DMPID" 2>/dev/null
  ok xapi-resume-devices-connected $? "vbd (qdisk) state=$fe vbd (kernel) state=$fk vif state=$fv (4 = Connected); blkbackd pid $OLDDM -> ${DMPID:-none}"

  # Clean reboot: the guest acknowledges control/shutdown and reboots; xapi starts the VM
  # again in a new domain (actions_after_reboot = restart), with a new device model.
  OLDDID=$XDID; OLDDM=$DMPID; n0=$(grep -c E2E-DOMU-UP $XLOG)
  t=$(cs); xe vm-reboot vm=xapi-guest > /tmp/xe-reboot.log 2>&1; rc=$?; tr=$(( ($(cs) - t) * 10 ))
  XDID=$(xe vm-list name-label=xapi-guest params=domid --minimal)
  i=0; while [ "$(grep -c E2E-DOMU-UP $XLOG)" -le "$n0" ] && [ $i -lt $((DOMU_TIMEOUT * 10)) ]; do usleep 100000; i=$((i+1)); done
  [ $rc = 0 ] && [ -n "$XDID" ] && [ "$XDID" != "$OLDDID" ] && [ "$XDID" != -1 ] && [ "$(grep -c E2E-DOMU-UP $XLOG)" -gt "$n0" ]
  ok xe-vm-reboot $? "xe returned after $tr ms; domid $OLDDID -> $XDID; guest up again: $(grep -c E2E-DOMU-UP $XLOG) times $(tr '\n' ' ' < /tmp/xe-reboot.log)"
  DMPID=$(xenstore-read /local/domain/$XDID/image/device-model-pid 2>/dev/null)
  [ -n "$OLDDM" ] && [ "$OLDDM" != "$DMPID" ] && ! { [ -d /proc/$OLDDM ] && ! grep -q '^State:.*Z' /proc/$OLDDM/status; }
  ok xapi-reboot-new-device-model $? "blkbackd pid $OLDDM stopped, now $DMPID"

  t1=$(cs)
  xe vm-shutdown vm=xapi-guest > /tmp/xe-shutdown.log 2>&1; rc=$?
  t2=$(cs)
  ok xe-vm-shutdown $rc "$(tr '\n' ' ' < /tmp/xe-shutdown.log)"
  [ $rc = 0 ] && echo "E2E-METRIC xapi-vm-clean-shutdown $(( (t2 - t1) * 10 )) ms"
  ps=$(xe vm-list name-label=xapi-guest params=power-state --minimal)
  [ "$ps" = halted ]; ok xapi-vm-halted $? "power-state=$ps"
  # Nothing left: domain, device model, backend and domain directories.
  ids="$XDID|${OLDDID:-$XDID}"
  i=0; while xl list 2>/dev/null | awk '{print $2}' | grep -qxE "$ids" && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
  ! xl list 2>/dev/null | awk '{print $2}' | grep -qxE "$ids"; ok xapi-no-domain-left $? "domains $ids gone: $(xl list 2>&1 | tail -n +2 | tr -s ' ' | tr '\n' ';')"
  ! { [ -n "$DMPID" ] && [ -d /proc/$DMPID ] && ! grep -q '^State:.*Z' /proc/$DMPID/status; }
  ok xapi-no-blkbackd-left $? "device model pid ${DMPID:-none}"
  left=""
  for p in /local/domain/0/backend/qdisk/$XDID /local/domain/0/backend/vif/$XDID /local/domain/0/backend/vbd/$XDID \
           /local/domain/0/device-model/$XDID /local/domain/$XDID; do
    xenstore-exists "$p" 2>/dev/null && left="$left $p"
  done
  [ -z "$left" ]; ok xapi-no-backend-dirs-left $? "${left:-none left}"
  got=$(dd if=/tmp/xapi-disk.img bs=64 count=1 2>/dev/null | tr -d '\000\n')
  [ "$got" = HELLO-FROM-XAPI-GUEST-VIA-BLKBACKD ]; ok xapi-guest-disk-write $? "image holds '$got'"
  # What the guest wrote through the kernel's blkback (at 4 KiB of xvdb) is on the loop
  # device's image, and backend/vbd of the last domain is gone.
  kgot=$(dd if=/tmp/xapi-kdisk.img bs=512 skip=8 count=1 2>/dev/null | tr -d '\000\n')
  kleft=0; xenstore-exists /local/domain/0/backend/vbd/$XDID 2>/dev/null && kleft=1
  [ "$kgot" = HELLO-FROM-XAPI-GUEST-VIA-KERNEL-BLKBACK ] && [ $kleft = 0 ]
  ok xapi-kernel-blkback-write $? "$KLOOP's image holds '$kgot' at 4 KiB; backend/vbd/$XDID left after shutdown: $kleft"

  # Fault: a kernel that does not exist: XAPI's error, and no domain left.
  n0=$(xl list 2>/dev/null | grep -c .)
  xe vm-create name-label=no-kernel memory=64 PV-kernel=/nonexistent/vmlinuz > /dev/null 2>&1
  xe vm-start vm=no-kernel > /tmp/xe-nokernel.log 2>&1; rc=$?
  n1=$(xl list 2>/dev/null | grep -c .)
  [ $rc != 0 ] && grep -q 'Error code: INTERNAL_ERROR' /tmp/xe-nokernel.log && [ "$n0" = "$n1" ]
  ok xapi-start-missing-kernel $? "rc=$rc domains before=$n0 after=$n1: $(tr '\n' ' ' < /tmp/xe-nokernel.log)"
  # The guest powers off without xapi asking (someone else writes control/shutdown): xapi
  # notices through @releaseDomain, tears the domain down (actions_after_shutdown =
  # destroy) and marks the VM Halted.
  n0=$(grep -c E2E-DOMU-UP $XLOG)
  xe vm-start vm=xapi-guest > /tmp/xe-start2.log 2>&1; rc=$?
  i=0; while [ "$(grep -c E2E-DOMU-UP $XLOG)" -le "$n0" ] && [ $i -lt $((DOMU_TIMEOUT * 10)) ]; do usleep 100000; i=$((i+1)); done
  D4=$(xe vm-list name-label=xapi-guest params=domid --minimal)
  DM4=$(xenstore-read /local/domain/$D4/image/device-model-pid 2>/dev/null)
  xenstore-write /local/domain/$D4/control/shutdown poweroff
  i=0; while [ "$(xe vm-list name-label=xapi-guest params=power-state --minimal)" != halted ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
  ps=$(xe vm-list name-label=xapi-guest params=power-state --minimal)
  j=0; while xl list 2>/dev/null | awk '{print $2}' | grep -qx "$D4" && [ $j -lt 100 ]; do usleep 100000; j=$((j+1)); done
  gone=1; xl list 2>/dev/null | awk '{print $2}' | grep -qx "$D4" && gone=0
  [ -n "$DM4" ] && [ -d /proc/$DM4 ] && ! grep -q '^State:.*Z' /proc/$DM4/status && gone=0
  xenstore-exists /local/domain/0/backend/qdisk/$D4 2>/dev/null && gone=0
  [ $rc = 0 ] && [ "$ps" = halted ] && [ $gone = 1 ]
  ok xapi-guest-poweroff-noticed $? "domain $D4 powered off by itself: power-state=$ps, domain, blkbackd $DM4 and backend dirs gone: $gone"

  # The official Python SDK on the host machine, through QEMU's forward of a loopback port to
  # 10.0.2.15:443 (e1000 on QEMU's user network): xtask starts it on E2E-SDK-READY and the
  # script sets pool other-config:sdk-done when it is finished.
  insmod $K/drivers/net/ethernet/intel/e1000/e1000.ko
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done
  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2
  nic=$?; ok sdk-dom0-nic $nic "eth0 $(cat /sys/class/net/eth0/address 2>/dev/null) 10.0.2.15/24"
  dd if=/dev/zero of=/tmp/sdk-disk.img bs=1M count=16 2>/dev/null
  POOL=$(xe pool-list --minimal)
  # Without the NIC the host cannot connect: no E2E-SDK-READY (xtask reports sdk-start FAIL).
  [ $nic = 0 ] && echo "E2E-SDK-READY https 10.0.2.15:443"
  t=$(cs); done_=""
  while [ $nic = 0 ] && [ $(( $(cs) - t )) -lt 60000 ]; do
    done_=$(xe pool-param-get uuid="$POOL" param-name=other-config param-key=sdk-done 2>/dev/null)
    [ -n "$done_" ] && break
    echo "E2E-MARK sdk-wait $(( ($(cs) - t) / 100 )) s uptime=$(up)"
    sleep 15
  done
  [ "$done_" = PASS ]; ok sdk-host-script $? "sdk-done=${done_:-never set} after $(( ($(cs) - t) / 100 )) s"
  left=$(xl list 2>/dev/null | tail -n +3 | awk '{print $1":"$2}' | tr '\n' ' ')
  [ -z "$left" ]; ok sdk-no-domain-left $? "domains but dom0: ${left:-none}"
  bb=$(pidof blkbackd)
  [ -z "$bb" ]; ok sdk-no-blkbackd-left $? "blkbackd pids: ${bb:-none}"
  bd=$(xenstore-list /local/domain/0/backend/qdisk 2>/dev/null; xenstore-list /local/domain/0/backend/vif 2>/dev/null)
  [ -z "$bd" ]; ok sdk-no-backend-dirs-left $? "backend dirs: $(echo $bd)"
  grep -q E2E-DOMU-USERSPACE /var/log/xen/console/guest-sdk-guest.log 2>/dev/null
  ok sdk-guest-console $? "$(grep -c E2E-DOMU-UP /var/log/xen/console/guest-sdk-guest.log 2>/dev/null) boots reached E2E-DOMU-UP in guest-sdk-guest.log"

  kill $XAPI_PID; wait $XAPI_PID 2>/dev/null
  # Nothing holds the kernel-blkback disk any more: the loop device detaches.
  losetup -d "$KLOOP" 2>/tmp/losetup.log; ok xapi-kernel-blkback-released $? "losetup -d $KLOOP: $(cat /tmp/losetup.log)"
  echo "----- xapi log -----"; cat /tmp/xapi-earlier.log 2>/dev/null | tail -20; tail -30 /tmp/xapi.log; echo "----- end of xapi log -----"
  echo "----- xapi guest console -----"; tail -20 $XLOG; echo "----- end of xapi guest console -----"
  echo "E2E-MARK xapi-done uptime=$(up)"
fi

# ---- parts: e2e/parts/<name>.sh, each sourced in a subshell (the functions above are there;
# its variables and an `exit` stay its own). A part prints its own E2E-CHECK/E2E-METRIC lines;
# a guest it starts with `e2e_part=<name>` runs e2e/guest-parts/<name>.sh. ----
for p in /e2e/parts/*.sh; do
  [ -f "$p" ] || continue
  n=${p##*/}; n=${n%.sh}
  want "$n" || continue
  echo "E2E-MARK part-$n uptime=$(up)"
  ( . "$p" ); rc=$?
  [ $rc = 0 ] || check "part:$n" FAIL "its script exited $rc"
  echo "E2E-MARK part-$n-done uptime=$(up)"
done

# ---- xenstored peer measurement: test-xenstore against the running daemon(s) ----
xsbench() {
  echo "E2E-MARK test-xenstore $1 uptime=$(up)"
  ( timeout 300 test-xenstore -i $XS_ITERS 2>&1; echo $? > /tmp/xsb.rc ) | sed "s/^/E2E-XSBENCH $1 /"
  ok "test-xenstore:$1" "$(cat /tmp/xsb.rc)" "-i $XS_ITERS"
  # The project's load generator, same daemon: ops/s and p99 per workload, connections and
  # requests in flight (one line each; the table is in the console log).
  if [ -x /e2e/bin/xs-load ]; then
    ( timeout 300 /e2e/bin/xs-load --socket /run/xenstored/socket --workload read,write,directory,tx-rmw \
        --conns 1,64 --depth 1,16 --duration 1 --children 1000 --tree-nodes 1000 --threads 1 2>&1
      echo $? > /tmp/xsl.rc ) | sed "s/^/E2E-XSLOAD $1 /"
    ok "xs-load:$1" "$(cat /tmp/xsl.rc)" "read/write/directory/tx-rmw at 1 and 64 connections"
  fi
}
if [ "$XS_ITERS" -gt 0 ] && want xsbench; then
  xsbench "$XENSTORED"
  if [ -n "$XENSTORED_OTHER" ]; then
    kill "$(cat /run/xenstored.pid)" 2>/dev/null; i=0
    while [ -S /run/xenstored/socket ] && kill -0 "$(cat /run/xenstored.pid)" 2>/dev/null && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done
    rm -f /run/xenstored/socket
    start_xenstored "$XENSTORED_OTHER"; ok "xenstored-start:$XENSTORED_OTHER" $? "second daemon for the measurement"
    xsbench "$XENSTORED_OTHER"
  fi
fi
echo "E2E-DONE uptime=$(up)"
sync
poweroff -f
