# Part `blkqd1`: where dom0's time goes per request at queue depth 1, for the kernel's blkback
# (xvda, loop device) and blkbackd (xvdb, qdisk, loop device) in the same guest.
# The guest (e2e/guest-parts/blkqd1.sh) announces each 2 s run of blk-load; dom0 samples
# before and after it: dom0's busy time (/proc/stat), every thread's CPU time
# (/proc/*/task/*/schedstat), blkbackd's context switches and read/write-class system calls
# (/proc/PID/task/*/status and io) and dom0's interrupts (event channels), and prints per
# request: QD1-PROF <case> ops=... lines, and E2E-METRIC qd1-<variant>:<case> rows.
# Variants (one guest each): blkbackd's settings, name:args (commas for spaces) in
# QD1_VARIANTS: blkbackd as it is, twice (the host is shared: one round says little), and,
# when an strace is at /e2e/bin/strace (not in the default image: a local run adds it), a
# variant `strace` that counts blkbackd's system calls during each run on xvdb
# (`QD1-SYSCALLS <case> <call>=<calls per request> ...`; strace slows it down: its
# throughput rows mean nothing).
# With an older build at /e2e/bin/blkbackd-base (a local run adds it), variants named base*
# run that one, interleaved with the current one: base1 new1 base2 new2 (and strace of both).
if [ -x /e2e/bin/blkbackd-base ]; then
  QD1_VARIANTS=${QD1_VARIANTS:-base1: new1:}
  [ -x /e2e/bin/strace ] && QD1_VARIANTS="$QD1_VARIANTS stbase: stnew:"
  QD1_VARIANTS="$QD1_VARIANTS base2: new2:"
else
  QD1_VARIANTS=${QD1_VARIANTS:-a: b:}
  [ -x /e2e/bin/strace ] && QD1_VARIANTS="$QD1_VARIANTS strace:"
fi
QD1_LOGDIR=/tmp/qd1; rm -rf $QD1_LOGDIR; mkdir -p $QD1_LOGDIR

# qd1_snap FILE pre|post: "<tid> <ns on CPU> <comm>" for every thread and "busy <ticks>",
# dom0's busy time read after the threads before a run and before them after it (reading
# them takes a while under emulation).
qd1_busy() { awk '/^cpu / { print "busy", $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
qd1_snap() {
  [ "$2" = post ] && qd1_busy > $1.busy
  for f in /proc/[0-9]*/task/[0-9]*; do
    read -r ns rest < $f/schedstat 2>/dev/null && read -r comm < $f/comm 2>/dev/null \
      && echo "${f##*/} $ns $comm"
  done > $1
  [ "$2" = pre ] && qd1_busy > $1.busy
  cat $1.busy >> $1
  cp /proc/interrupts $1.irq
  # blkbackd's threads: voluntary and forced context switches, syscr, syscw.
  for t in /proc/$QD1_BB/task/[0-9]*; do
    awk -v t="${t##*/}" '/^voluntary_ctxt/ { v = $2 } /^nonvoluntary_ctxt/ { n = $2 }
      END { printf "%s %s %s", t, v, n }' $t/status
    awk '/^syscr/ { r = $2 } /^syscw/ { w = $2 } END { printf " %s %s\n", r, w }' $t/io
  done > $1.bb 2>/dev/null
}

# qd1_prof CASE OPS BEFORE AFTER: the per-request profile of one run.
qd1_prof() {
  awk -v ops="$2" -v c="$1" '
    FNR == 1 { f++ }
    f == 1 && $1 == "busy" { b0 = $2; next }
    f == 2 && $1 == "busy" { b1 = $2; next }
    f == 1 { ns0[$1] = $2; next }
    f == 2 { d = $2 - ns0[$1]; if (d > 0) { cpu[$3] += d } }
    END {
      if (ops <= 0) ops = 1
      printf "QD1-PROF %s ops=%d dom0-busy-us/req=%.0f top-threads-us/req:", c, ops, (b1 - b0) * 10000 / ops
      n = 0
      while (n < 6) {
        m = ""; for (k in cpu) if (m == "" || cpu[k] > cpu[m]) m = k
        if (m == "" || cpu[m] < 1000 * ops) break
        printf " %s=%.0f", m, cpu[m] / 1000 / ops; delete cpu[m]; n++
      }
      printf "\n"
    }' $3 $4
  awk -v ops="$2" -v c="$1" '
    FNR == 1 { f++ }
    f == 1 { v[$1] = $2; n[$1] = $3; r[$1] = $4; w[$1] = $5; next }
    { V += $2 - v[$1]; N += $3 - n[$1]; R += $4 - r[$1]; W += $5 - w[$1] }
    END { if (ops <= 0) ops = 1
      printf "QD1-PROF %s blkbackd-per-req: sleeps=%.2f preempted=%.2f syscr=%.2f syscw=%.2f\n", c, V / ops, N / ops, R / ops, W / ops }' $3.bb $4.bb
  awk -v ops="$2" -v c="$1" '
    FNR == 1 { f++ }
    { s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; k = $1 " " $NF }
    f == 1 { a[k] = s; next }
    { d = s - a[k]; if (d >= ops / 4 && d > 20) printf "QD1-PROF %s irq %s %.2f/req\n", c, k, d / (ops > 0 ? ops : 1) }' $3.irq $4.irq
}

qd1_run() { # VARIANT ARGS
  v=$1; shift
  kimg=/tmp/qd1-k.img; oimg=/tmp/qd1-o.img
  dd if=/dev/urandom of=$kimg bs=1M count=16 2>/dev/null; cp $kimg $oimg
  # (busybox's losetup: -f names the first free device.)
  KL=$(losetup -f) && losetup $KL $kimg && OL=$(losetup -f) && losetup $OL $oimg || OL=""
  [ -n "$OL" ]; ok "qd1-$v:loop" $? "kernel's on ${KL:-none}, ours on ${OL:-none}"
  [ -n "$OL" ] || return 1
  if [ "$HOTPLUG" = debian ]; then ds=""; else ds="script=/e2e/block-e2e,"; fi
  cat > /tmp/qd1-$v.cfg <<CFG
name = "qd1-$v"
type = "pv"
kernel = "/boot/domu-kernel"
ramdisk = "/boot/domu-initrd"
extra = "console=hvc0 rdinit=/init e2e_part=blkqd1 qd1_tag=$v"
memory = 128
vcpus = 1
$([ -n "$DOMU_CPUS" ] && echo "cpus = \"$DOMU_CPUS\"")
disk = [ 'format=raw, vdev=xvda, access=w, $ds target=$KL' ]
vif = [ ]
on_poweroff = "destroy"
on_crash = "destroy"
CFG
  LOG=/var/log/xen/console/guest-qd1-$v.log; rm -f $LOG
  timeout $DOMU_TIMEOUT xl create /tmp/qd1-$v.cfg > /tmp/qd1-$v.xl 2>&1; rc=$?
  ok "qd1-$v:create" $rc "$(tail -2 /tmp/qd1-$v.xl | tr '\n' ' ')"
  [ $rc = 0 ] || return 1
  D=$(xl domid qd1-$v)
  bb=/e2e/bin/blkbackd; case "$v" in base*|stbase) bb=/e2e/bin/blkbackd-base ;; esac
  $bb --domid "$D" --pid-file /run/qd1-bb.pid "$@" > $QD1_LOGDIR/bb-$v.log 2>&1 &
  i=0; while [ ! -s /run/qd1-bb.pid ] && [ $i -lt 100 ]; do usleep 50000; i=$((i+1)); done
  QD1_BB=$(cat /run/qd1-bb.pid 2>/dev/null)
  timeout 60 xl block-attach qd1-$v "format=raw, vdev=xvdb, access=w, backendtype=qdisk, target=$OL" > /tmp/qd1-att.log 2>&1
  ok "qd1-$v:attach" $? "blkbackd pid ${QD1_BB:-none} $(tr '\n' ' ' < /tmp/qd1-att.log)"
  seen=0; t0=$(cs); ended=""
  while [ $(( $(cs) - t0 )) -lt 90000 ]; do
    l=$(grep -a '^QD1-' $LOG 2>/dev/null | sed -n "$((seen + 1))p")
    if [ -z "$l" ]; then
      grep -q "E2E-DOMU-CHECK qd1-$v:guest FAIL" $LOG 2>/dev/null && break
      usleep 100000; continue
    fi
    seen=$((seen + 1))
    set -- $l
    case "$1" in
      QD1-GO)
        stp=""
        case "$v:$2" in
          st*:*:xvdb)
            /e2e/bin/strace -f -c -p "$QD1_BB" -o $QD1_LOGDIR/strace 2>/dev/null &
            stp=$! ;;
        esac
        qd1_snap $QD1_LOGDIR/a pre; usleep 2500000 ;;
      QD1-DONE)
        qd1_snap $QD1_LOGDIR/b post
        c=$2; shift 2; line="$*"
        ops=$(echo "$line" | sed -n 's/.* ops=\([0-9]*\).*/\1/p')
        kib=$(echo "$line" | sed -n 's/.* kib_s=\([0-9]*\).*/\1/p')
        mean=$(echo "$line" | sed -n 's/.* mean_us=\([0-9]*\).*/\1/p')
        g=$(echo "$line" | sed -n 's/.* gints=\([0-9]*\).*/\1/p')
        echo "QD1-RUN $c $line"
        echo "E2E-METRIC qd1-$c $kib KiB/s"
        echo "E2E-METRIC qd1-$c:mean-latency $mean us"
        [ -n "$ops" ] && [ "$ops" -gt 0 ] && echo "QD1-PROF $c guest-blkif-irqs/req=$(awk -v g="$g" -v o="$ops" 'BEGIN { printf "%.2f", g / o }')"
        qd1_prof "$c" "${ops:-0}" $QD1_LOGDIR/a $QD1_LOGDIR/b
        if [ -n "$stp" ]; then
          kill -INT $stp; wait $stp
          # strace -c's table: % time, seconds, usecs/call, calls, [errors,] syscall.
          awk -v c="$c" -v ops="${ops:-0}" '$1 ~ /^[0-9.]+$/ && NF >= 5 {
              n = $4; s = $NF; if (s == "total") { t = n; next }; l = l " " s "=" sprintf("%.2f", n / (ops > 0 ? ops : 1)) }
            END { printf "QD1-SYSCALLS %s total=%.2f/req:%s\n", c, t / (ops > 0 ? ops : 1), l }' $QD1_LOGDIR/strace
          cat $QD1_LOGDIR/strace
        fi ;;
      QD1-END) ended=1; break ;;
    esac
  done
  [ -n "$ended" ]; ok "qd1-$v:runs" $? "$seen lines from the guest"
  grep '^E2E-DOMU-CHECK' $LOG 2>/dev/null | sed 's/^E2E-DOMU-CHECK /E2E-CHECK /'
  timeout 60 xl destroy qd1-$v > /dev/null 2>&1
  i=0; while [ -e /run/qd1-bb.pid ] && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done
  echo "----- qd1-$v: blkbackd log -----"; tail -20 $QD1_LOGDIR/bb-$v.log; echo "----- end -----"
  losetup -d $KL; losetup -d $OL; rm -f $kimg $oimg
}

echo "qd1: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
for qv in $QD1_VARIANTS; do
  qd1_run "${qv%%:*}" $(echo "${qv#*:}" | tr ',' ' ')
done
