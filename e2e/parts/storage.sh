# Storage on real Xen: our xapi with a file SR whose VDIs are qcow2 chains, served by blkbackd
# (each guest's device model). Sourced by dom0's /init (check, ok, cs, up are there); the
# guests run e2e/guest-parts/storage.sh with their role in `st_role=`.
#   1. A guest writes pattern A and flushes; `xe vm-snapshot` while it runs and writes on
#      elsewhere (xapi pauses blkbackd over QMP, snapshots, resumes on the new leaf); the guest
#      writes pattern B over A and flushes; the guest is hard shut down (its device model
#      stopped as xapi stops it). A second guest reads a clone of the snapshot (A) and the
#      original disk (B).
#   2. In that second guest: throughput of a disk three snapshots deep (taken while the guest
#      runs) against a flat one of the same SR, interleaved rounds, medians: E2E-METRIC
#      guest-disk-chain3:<case>, guest-disk-flat:<case> (KiB/s), guest-disk-chain3-vs-flat:<case> (%).
[ "$DOMU" = 1 ] && [ -x /e2e/bin/xapi ] && [ -x /e2e/bin/xe ] || { check storage-live-snapshot FAIL "no xapi/xe or no guests in this run"; exit 0; }
ST=/tmp/st; rm -rf $ST; mkdir -p $ST/state $ST/sr
LOGS=/var/log/xen/console
NO_COLOR=1 RUST_LOG=toolstack=info,blkbackd=info /e2e/bin/xapi --hypervisor real --discover --state-dir $ST/state \
  --root-password e2e --listen none --https-listen 0.0.0.0:443 --blkbackd /e2e/bin/blkbackd \
  --clean-shutdown-timeout 30 > $ST/xapi.log 2>&1 &
XP=$!
i=0; while ! grep -q '^ready' $ST/xapi.log 2>/dev/null && kill -0 $XP 2>/dev/null && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done
grep -q '^ready' $ST/xapi.log; sok storage-xapi-start $? "$(grep -m1 '^hypervisor' $ST/xapi.log)"
xe() { timeout 180 /e2e/bin/xe -pw e2e "$@"; }
# sok NAME RC DETAIL: `ok`, remembering a failure (the logs are printed at the end).
DIAG=""
sok() { ok "$@"; [ "$2" = 0 ] || DIAG=1; }
finish() {
  for vm in st-writer st-check; do xe vm-shutdown --force vm=$vm > /dev/null 2>&1; done
  kill $XP 2>/dev/null; wait $XP 2>/dev/null
  if [ -n "$1" ]; then
    echo "----- storage: xapi log -----"; grep -a 'VDI\|datapath\|WARN\|ERROR' $ST/xapi.log | tail -30
    for g in st-writer st-check; do
      [ -e $LOGS/guest-$g.log ] && { echo "----- storage: console of $g -----"; tr -d '\r' < $LOGS/guest-$g.log | grep -v '^\[' | tail -25; }
    done
    for l in /var/log/xen/blkbackd-*.log; do [ -e "$l" ] && { echo "----- $l -----"; tail -15 "$l"; }; done
  fi
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
# mailbox IMG WORD: what the guest polls for.
mailbox() { printf '%s' "$2" | dd of=$1 conv=notrunc,fsync 2>/dev/null; }

SR=$(xe sr-create type=file name-label=st-sr device-config:location=$ST/sr 2>&1)
sok storage-sr-create $? "file SR $SR in $ST/sr"
V=$(xe vdi-create sr-uuid=$SR name-label=st-disk virtual-size=67108864 2>&1)
dd if=/dev/zero of=$ST/mbox.img bs=1M count=1 2>/dev/null
MB=$(xe vdi-create sr-uuid=$SR name-label=st-mbox virtual-size=1048576 sm-config:path=$ST/mbox.img 2>&1)
W=$(vm st-writer writer $V $MB) && start st-writer; rc=$?
sok storage-writer-start $rc "vm $W disk $V ($(head -c 4 $ST/sr/$V.qcow2 | od -c | head -1 | cut -c9-)) mailbox $MB: $(cat $ST/start-st-writer.log)"
A=$(guest_line st-writer A); sok storage-guest-wrote-a $? "md5 $A"
# The guest writes between 16 and 32 MiB meanwhile: let it get going.
guest_line st-writer CHUNKS-B > /dev/null

# The snapshot while the guest runs.
t=$(cs); SNAP=$(xe vm-snapshot vm=st-writer new-name-label=st-snap 2>&1); rc=$?; ms=$(( ($(cs) - t) * 10 ))
ps=$(xe vm-list name-label=st-writer params=power-state --minimal)
[ $rc = 0 ] && [ "$ps" = running ]; sok storage-live-snapshot $? "vm-snapshot -> $SNAP in $ms ms, writer $ps; $(grep -a 'datapath' $ST/xapi.log | tail -1 | sed 's/.*INFO //')"
[ $rc = 0 ] && echo "E2E-METRIC storage-vm-snapshot-running $ms ms"
# How long the guest's disk stood paused (xapi's log): pause, snapshot, resume.
pw=$(sed -n 's/.*datapath(s) paused for \([0-9]*\) ms.*/\1/p' $ST/xapi.log | tail -1)
[ -n "$pw" ] && echo "E2E-METRIC storage-datapath-paused $pw ms"
mailbox $ST/mbox.img GO-B
B=$(guest_line st-writer B); rcb=$?
bg=$(guest_line st-writer BACKGROUND)
set -- $bg
[ $rcb = 0 ] && [ "${2:-1}" = 0 ] && [ "${1:-0}" -gt 0 ]; sok storage-guest-writes-across-snapshot $? "B md5 $B; background writes: ${1:-?} done, ${2:-?} failed"
RB=$(guest_line st-writer READBACK)
# Hard shutdown: xapi stops the device model (SIGTERM, SIGKILL after 5 s) and destroys the domain.
xe vm-shutdown --force vm=st-writer > /dev/null 2>&1

# The snapshot's disk, cloned, and the original, read by a second guest that also runs the
# chain-3 benchmark.
SV=$(xe vdi-list name-label=st-disk is-a-snapshot=true params=uuid --minimal 2>&1)
CL=$(xe vdi-clone uuid=$SV new-name-label=st-clone 2>&1); rc=$?
sok storage-vdi-clone-of-snapshot $rc "snapshot VDI $SV -> clone $CL"
D=$(xe vdi-create sr-uuid=$SR name-label=st-deep virtual-size=67108864 2>&1)
F=$(xe vdi-create sr-uuid=$SR name-label=st-flat virtual-size=67108864 2>&1)
dd if=/dev/zero of=$ST/mbox2.img bs=1M count=1 2>/dev/null
MB2=$(xe vdi-create sr-uuid=$SR name-label=st-mbox2 virtual-size=1048576 sm-config:path=$ST/mbox2.img 2>&1)
vm st-check check $CL $V $D $F $MB2 > /dev/null && start st-check
got=$(guest_line st-check READ-CLONE); got=${got%% *}
[ -n "$A" ] && [ "$got" = "$A" ]; sok storage-clone-sees-old-data $? "clone read $got, A was $A (B $B)"
got=$(guest_line st-check READ-ORIG); got=${got%% *}
[ -n "$B" ] && [ "$got" = "$B" ]; rc=$?
sok storage-original-sees-new-data $rc "original read $got, B was $B (A $A; the writer read back ${RB%% *} before its hard shutdown)"
if [ $rc != 0 ]; then
  echo "storage: chunks A:    $(guest_line st-writer CHUNKS-A)"
  echo "storage: chunks B:    $(guest_line st-writer CHUNKS-B)"
  echo "storage: chunks read: $(guest_line st-check CHUNKS-READ-ORIG)"
  ls -la $ST/sr
fi

f=$(guest_line st-check FILLED); rc=$?
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
[ $n = 3 ] && [ $depth = 3 ]; sok storage-three-live-snapshots $? "snapshot ms:$times; chain under the disk: $depth images"
for x in $times; do echo "E2E-METRIC storage-vdi-snapshot-running $x ms"; done
mailbox $ST/mbox2.img GO
if guest_line st-check BENCH-DONE > /dev/null; then
  tr -d '\r' < $LOGS/guest-st-check.log | grep -a 'E2E-STORAGE BENCH ' | sed 's/.*E2E-STORAGE BENCH //' > $ST/bench
  bad=""
  while read -r c d fl; do
    case "$d$fl" in ''|*[!0-9]*) bad="$bad $c"; continue ;; esac
    echo "E2E-METRIC guest-disk-chain3:$c $d KiB/s"
    echo "E2E-METRIC guest-disk-flat:$c $fl KiB/s"
    [ "$fl" -gt 0 ] && echo "E2E-METRIC guest-disk-chain3-vs-flat:$c $(( d * 100 / fl )) %"
  done < $ST/bench
  [ -s $ST/bench ] && [ -z "$bad" ]; sok storage-chain3-bench $? "$(wc -l < $ST/bench) cases${bad:+, no numbers for$bad}"
else
  check storage-chain3-bench FAIL "no BENCH-DONE from the guest"; DIAG=1
fi
finish $DIAG
