#!/bin/busybox sh
# PV guest /init for `cargo xtask e2e`: brings up blkfront and netfront, checks its disks, reports.
# xvda is served by the kernel's xen-blkback; xvdb (hot-plugged by dom0 with backendtype=qdisk)
# by the project's blkbackd. Lines for dom0: E2E-DOMU-CHECK <name> PASS|FAIL <detail>,
# E2E-DOMU-METRIC <name> <value> <unit>, E2E-DOMU-MD5 <what> <md5>, E2E-DOMU-UP.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
K=/lib/modules/$(uname -r)/kernel
insmod $K/drivers/block/xen-blkfront.ko; insmod $K/drivers/net/xen-netfront.ko
check() { n=$1; r=$2; shift 2; echo "E2E-DOMU-CHECK $n $r $*"; }
# Hundredths of a second since boot (shell builtins only).
cs() {
  read -r u _ < /proc/uptime; u=${u%%.*}${u#*.}
  while [ "${u#0}" != "$u" ]; do u=${u#0}; done
  echo "${u:-0}"
}
waitfor() { i=0; while [ ! -e "$1" ] && [ $i -lt $2 ]; do usleep 100000; i=$((i+1)); done; [ -e "$1" ]; }
waitfor /dev/xvda 100
waitfor /sys/class/net/eth0 100
if [ -b /dev/xvda ]; then
  echo "HELLO-FROM-DOMU-VIA-BLKBACK" | dd of=/dev/xvda conv=fsync 2>/dev/null \
    && check blkfront PASS "wrote xvda" || check blkfront FAIL "write to xvda failed"
else
  check blkfront FAIL "no /dev/xvda"
fi
if ip link set eth0 up 2>/dev/null; then
  check netfront PASS "eth0 $(cat /sys/class/net/eth0/address)"
else
  check netfront FAIL "no eth0"
fi

# ---- xvdb: the project's userspace blkback ----
# One dd run: prints KiB/s. $1 = dd arguments. Direct I/O, so the guest's page cache is out.
rate() {
  t0=$(cs); dd $1 2>/dev/null || return 1; t1=$(cs)
  echo $(( BYTES / 1024 * 100 / ( t1 - t0 > 0 ? t1 - t0 : 1 ) ))
}
# $1 = device, $2 = case name: sets R to KiB/s (0 on failure).
bench() {
  d=/dev/$1
  case $2 in
    read-64k-qd1)  BYTES=$((128 * 65536)); R=$(rate "if=$d of=/dev/null bs=64k count=128 iflag=direct") ;;
    write-64k-qd1) BYTES=$((128 * 65536)); R=$(rate "if=/dev/zero of=$d bs=64k count=128 seek=128 oflag=direct") ;;
    read-4k-qd1)   BYTES=$((512 * 4096));  R=$(rate "if=$d of=/dev/null bs=4k count=512 iflag=direct") ;;
    write-4k-qd1)  BYTES=$((512 * 4096));  R=$(rate "if=/dev/zero of=$d bs=4k count=512 seek=3072 oflag=direct") ;;
    read-64k-qd4)
      # Four readers at once, each 2 MiB of its own quarter.
      BYTES=$((4 * 32 * 65536)); t0=$(cs)
      for q in 0 1 2 3; do dd if=$d of=/dev/null bs=64k count=32 skip=$((q * 64)) iflag=direct 2>/dev/null & done
      wait; t1=$(cs)
      R=$(( BYTES / 1024 * 100 / ( t1 - t0 > 0 ? t1 - t0 : 1 ) )) ;;
  esac
  R=${R:-0}
}
if waitfor /dev/xvdb 600; then
  # 1. Read the whole disk (dom0 filled it with random bytes and compares the sum).
  echo "E2E-DOMU-MD5 xvdb-read $(md5sum < /dev/xvdb | cut -d' ' -f1)"
  # 2. Write 1 MiB at 4 MiB with O_DIRECT, read it back past the page cache.
  dd if=/dev/urandom of=/tmp/w bs=64k count=16 2>/dev/null
  ws=$(md5sum < /tmp/w | cut -d' ' -f1)
  if dd if=/tmp/w of=/dev/xvdb bs=64k seek=64 oflag=direct conv=fsync 2>/dev/null; then
    rs=$(dd if=/dev/xvdb bs=64k skip=64 count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$rs" = "$ws" ] && check rust-blkback-readback PASS "1 MiB written with O_DIRECT read back: $ws" \
      || check rust-blkback-readback FAIL "wrote $ws, read back $rs"
  else
    check rust-blkback-readback FAIL "O_DIRECT write to xvdb failed"
  fi
  echo "E2E-DOMU-MD5 xvdb-write $ws"
  # 3. The same dd workloads on the kernel's blkback (xvda) and ours (xvdb), alternating.
  failed=""
  for c in read-64k-qd1 write-64k-qd1 read-64k-qd4 read-4k-qd1 write-4k-qd1; do
    bench xvda $c; k=$R; bench xvdb $c; o=$R
    echo "E2E-DOMU-METRIC guest-blk-$c:kernel-blkback $k KiB/s"
    echo "E2E-DOMU-METRIC guest-blk-$c:blkbackd $o KiB/s"
    [ "$k" -gt 0 ] && echo "E2E-DOMU-METRIC guest-blk-$c:blkbackd/kernel $(( o * 100 / k )) %"
    [ "$o" -gt 0 ] || failed="$failed $c"
  done
  [ -z "$failed" ] && check rust-blkback-bench PASS "dd workloads ran on xvda and xvdb" \
    || check rust-blkback-bench FAIL "on xvdb:$failed"
  # blkfront turns a feature off when the backend fails it (e.g. "empty flush op failed").
  dmesg | grep 'blkfront: xvd' > /tmp/bf
  if grep -q 'xvdb.*failed' /tmp/bf; then
    check rust-blkback-features FAIL "$(grep xvdb /tmp/bf | tr '\n' ' ')"
  else
    check rust-blkback-features PASS "$(grep xvdb /tmp/bf | tail -1 | sed 's/.*xvdb: //')"
  fi
else
  check rust-blkback FAIL "no /dev/xvdb after 60 s"
fi
echo "E2E-DOMU-UP"
# dom0 destroys the guest once it has read the frontends' state; this bounds the wait otherwise.
sleep 300
poweroff -f
