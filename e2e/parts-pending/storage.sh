# Storage on real Xen: our xapi with a file SR whose VDIs are qcow2 chains, served by blkbackd
# (each guest's device model). Sourced by dom0's /init (check, ok, cs, up are there); the
# guests run e2e/guest-parts/storage.sh with their role in `st_role=`.
#   1. A guest writes pattern A and flushes; `xe vm-snapshot` while it runs and writes on
#      elsewhere (xapi pauses blkbackd over QMP, snapshots, resumes on the new leaf); the guest
#      writes pattern B over A. A clone of the snapshot, booted, reads A; the original disk,
#      booted again, reads B.
#   2. Guest-visible throughput of a disk three snapshots deep (taken while the guest runs)
#      against a flat one of the same SR, in the same guest: E2E-METRIC
#      guest-blk-chain3-vs-flat:<case> in %.
[ "$DOMU" = 1 ] && [ -x /e2e/bin/xapi ] && [ -x /e2e/bin/xe ] || { check storage-live-snapshot FAIL "no xapi/xe or no guests in this run"; exit 0; }
ST=/tmp/st; rm -rf $ST; mkdir -p $ST/state $ST/sr
LOGS=/var/log/xen/console
RUST_LOG=toolstack=info,blkbackd=info /e2e/bin/xapi --hypervisor real --discover --state-dir $ST/state \
  --root-password e2e --listen none --https-listen 0.0.0.0:443 --blkbackd /e2e/bin/blkbackd \
  --clean-shutdown-timeout 30 > $ST/xapi.log 2>&1 &
XP=$!
i=0; while ! grep -q '^ready' $ST/xapi.log 2>/dev/null && kill -0 $XP 2>/dev/null && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done
grep -q '^ready' $ST/xapi.log; ok storage-xapi-start $? "$(grep -m1 '^hypervisor' $ST/xapi.log)"
xe() { timeout 180 /e2e/bin/xe -pw e2e "$@"; }
finish() {
  for vm in st-writer st-clone st-orig st-bench; do xe vm-shutdown --force vm=$vm > /dev/null 2>&1; done
  kill $XP 2>/dev/null; wait $XP 2>/dev/null
  echo "----- storage: xapi log -----"; tail -40 $ST/xapi.log; echo "----- end -----"
  for g in st-writer st-clone st-orig st-bench; do
    [ -e $LOGS/guest-$g.log ] && { echo "----- storage: console of $g -----"; grep -v '^\[' $LOGS/guest-$g.log | tail -15; }
  done
  for l in /var/log/xen/blkbackd-*.log; do [ -e "$l" ] && { echo "----- $l -----"; tail -15 "$l"; }; done
}
# guest_line VM WHAT: waits (up to 300 s) for `E2E-STORAGE WHAT ...` in VM's console log and
# prints the rest of the line.
guest_line() {
  i=0
  while [ $i -lt 3000 ]; do
    l=$(tr -d '\r' 2>/dev/null < $LOGS/guest-$1.log | grep -a -E "E2E-STORAGE $2( |\$)" | head -n 1)
    [ -n "$l" ] && { echo "${l#*E2E-STORAGE $2}" | sed 's/^ *//'; return 0; }
    usleep 100000; i=$((i+1))
  done
  return 1
}
# vm NAME ROLE VDI...: a PV guest running the storage guest part with these disks.
vm() {
  n=$1; r=$2; shift 2
  u=$(xe vm-create name-label=$n memory=128 PV-kernel=/boot/domu-kernel PV-ramdisk=/boot/domu-initrd \
      "PV-args=console=hvc0 rdinit=/init e2e_part=storage st_role=$r") || return 1
  d=0
  for v in "$@"; do xe vbd-create vm-uuid="$u" vdi-uuid="$v" device=$d > /dev/null || return 1; d=$((d+1)); done
  echo "$u"
}
start() { rm -f $LOGS/guest-$1.log; xe vm-start vm=$1 > $ST/start-$1.log 2>&1; }

SR=$(xe sr-create type=file name-label=st-sr device-config:location=$ST/sr 2>&1)
ok storage-sr-create $? "file SR $SR in $ST/sr: $(ls $ST/sr | tr '\n' ' ')"
V=$(xe vdi-create sr-uuid=$SR name-label=st-disk virtual-size=67108864 2>&1)
dd if=/dev/zero of=$ST/mbox.img bs=1M count=1 2>/dev/null
MB=$(xe vdi-create sr-uuid=$SR name-label=st-mbox virtual-size=1048576 sm-config:path=$ST/mbox.img 2>&1)
W=$(vm st-writer writer $V $MB) && start st-writer; rc=$?
ok storage-writer-start $rc "vm $W disk $V ($(head -c 4 $ST/sr/$V.qcow2 | od -c | head -1 | cut -c9-)) mailbox $MB: $(cat $ST/start-st-writer.log)"
A=$(guest_line st-writer A); ok storage-guest-wrote-a $? "md5 $A"

# The snapshot while the guest runs (and writes between 16 and 32 MiB).
t=$(cs); SNAP=$(xe vm-snapshot vm=st-writer new-name-label=st-snap 2>&1); rc=$?; ms=$(( ($(cs) - t) * 10 ))
ps=$(xe vm-list name-label=st-writer params=power-state --minimal)
[ $rc = 0 ] && [ "$ps" = running ]; ok storage-live-snapshot $? "vm-snapshot -> $SNAP in $ms ms, writer $ps; $(grep -a 'datapath' $ST/xapi.log | tail -1)"
[ $rc = 0 ] && echo "E2E-METRIC storage-vm-snapshot-running $ms ms"
# How long the guest's disk stood paused (xapi's log): pause, snapshot, resume.
pw=$(sed -n 's/.*datapath(s) paused for \([0-9]*\) ms.*/\1/p' $ST/xapi.log | tail -1)
[ -n "$pw" ] && echo "E2E-METRIC storage-datapath-paused $pw ms"
printf 'GO-B' | dd of=$ST/mbox.img conv=notrunc,fsync 2>/dev/null
B=$(guest_line st-writer B); rcb=$?
bg=$(guest_line st-writer BACKGROUND)
set -- $bg
[ $rcb = 0 ] && [ "${2:-1}" = 0 ] && [ "${1:-0}" -gt 0 ]; ok storage-guest-writes-across-snapshot $? "B md5 $B; background writes: ${1:-?} done, ${2:-?} failed"
xe vm-shutdown --force vm=st-writer > /dev/null 2>&1

# The snapshot's disk, cloned and booted, reads A.
SV=$(xe vdi-list name-label=st-disk is-a-snapshot=true params=uuid --minimal 2>&1)
CL=$(xe vdi-clone uuid=$SV new-name-label=st-clone 2>&1); rc=$?
ok storage-vdi-clone-of-snapshot $rc "snapshot VDI $SV -> clone $CL"
vm st-clone reader $CL > /dev/null && start st-clone
vm st-orig reader $V > /dev/null && start st-orig
got=$(guest_line st-clone READ)
[ -n "$A" ] && [ "$got" = "$A" ]; ok storage-clone-sees-old-data $? "clone read $got, A was $A (B $B)"
got=$(guest_line st-orig READ)
[ -n "$B" ] && [ "$got" = "$B" ]; rc=$?
ok storage-original-sees-new-data $rc "original read $got, B was $B (A $A)"
if [ $rc != 0 ]; then
  ls -la $ST/sr
  for g in st-writer st-orig; do echo "----- console of $g -----"; tr -d '\r' < $LOGS/guest-$g.log | grep -v '^\[' | tail -20; done
  for l in /var/log/xen/blkbackd-*.log; do echo "----- $l -----"; tail -20 "$l"; done
  grep -a 'VDI\|datapath\|WARN\|ERROR' $ST/xapi.log | tail -20
fi
xe vm-shutdown --force vm=st-clone > /dev/null 2>&1; xe vm-shutdown --force vm=st-orig > /dev/null 2>&1

# Three snapshots deep against flat, in one guest: snapshots taken while it runs.
D=$(xe vdi-create sr-uuid=$SR name-label=st-deep virtual-size=67108864 2>&1)
F=$(xe vdi-create sr-uuid=$SR name-label=st-flat virtual-size=67108864 2>&1)
dd if=/dev/zero of=$ST/mbox2.img bs=1M count=1 2>/dev/null
MB2=$(xe vdi-create sr-uuid=$SR name-label=st-mbox2 virtual-size=1048576 sm-config:path=$ST/mbox2.img 2>&1)
vm st-bench bench $D $F $MB2 > /dev/null && start st-bench
f=$(guest_line st-bench FILLED); rc=$?
n=0; times=""
if [ $rc = 0 ]; then
  for k in 1 2 3; do
    t=$(cs); xe vdi-snapshot uuid=$D > /dev/null 2>&1 && n=$((n+1)); times="$times $(( ($(cs) - t) * 10 ))"
  done
fi
depth=0; img=$ST/sr/$D.qcow2
while [ -e "$img" ]; do
  b=$(dd if="$img" bs=1 skip=8 count=8 2>/dev/null | od -An -tx1 | tr -d ' \n')
  [ "$b" = 0000000000000000 ] && break
  off=$((0x$b)); len=$(dd if="$img" bs=1 skip=16 count=4 2>/dev/null | od -An -tx1 | tr -d ' \n')
  img=$ST/sr/$(dd if="$img" bs=1 skip=$off count=$((0x$len)) 2>/dev/null); depth=$((depth+1))
done
[ $n = 3 ] && [ $depth = 3 ]; ok storage-three-live-snapshots $? "snapshot ms:$times; chain under the disk: $depth images"
for x in $times; do echo "E2E-METRIC storage-vdi-snapshot-running $x ms"; done
printf 'GO' | dd of=$ST/mbox2.img conv=notrunc,fsync 2>/dev/null
if guest_line st-bench BENCH-DONE > /dev/null; then
  tr -d '\r' < $LOGS/guest-st-bench.log | grep -a 'E2E-STORAGE BENCH ' | sed 's/.*E2E-STORAGE BENCH //' > $ST/bench
  bad=""
  while read -r c d fl; do
    case "$d$fl" in ''|*[!0-9]*) bad="$bad $c"; continue ;; esac
    echo "E2E-METRIC guest-blk-chain3:$c $d KiB/s"
    echo "E2E-METRIC guest-blk-flat:$c $fl KiB/s"
    [ "$fl" -gt 0 ] && echo "E2E-METRIC guest-blk-chain3-vs-flat:$c $(( d * 100 / fl )) %"
  done < $ST/bench
  [ -s $ST/bench ] && [ -z "$bad" ]; ok storage-chain3-bench $? "$(wc -l < $ST/bench) cases${bad:+, no numbers for$bad}"
else
  check storage-chain3-bench FAIL "no BENCH-DONE from the guest"
fi
finish
