# Guest side of e2e/parts/storage.sh (sourced by the guest's /init; `check` and `waitfor` are
# there). The role comes from the kernel command line (`st_role=`):
#   writer  xvda: the disk under test, xvdb: a mailbox dom0 writes to. Writes pattern A
#           (4 MiB at 0, direct I/O, flushed), reports its md5 and keeps writing elsewhere on
#           the disk while dom0 snapshots it; once the mailbox says GO-B, writes pattern B
#           over A (flushed), reports its md5 and the md5 read back.
#   check   xvda: a clone of the snapshot, xvdb: the original disk, xvdc: a disk dom0 makes
#           three snapshots deep, xvdd: a flat one, xvde: the mailbox. Reports the md5 of the
#           first 4 MiB of xvda and xvdb; fills 16 MiB of xvdc and xvdd, waits for GO (dom0
#           snapshots xvdc three times meanwhile), then runs blk-load on both, interleaved
#           rounds, and reports medians.
# Lines for dom0 (in the console log): E2E-STORAGE <what> <value...>.
role=$(sed -n 's/.*st_role=\([^ ]*\).*/\1/p' /proc/cmdline)
say() { echo "E2E-STORAGE $*"; }
md5() { md5sum | cut -d' ' -f1; }
# chunks FILE: the first 6 hex digits of each 64 KiB chunk's md5 (which chunks hold which
# pattern when a whole-range md5 differs).
chunks() {
  c=0; out=""
  while [ $c -lt 64 ]; do out="$out $(dd if=$1 bs=64k skip=$c count=1 2>/dev/null | md5 | cut -c1-6)"; c=$((c + 1)); done
  echo $out
}
# mailbox DEV WORD: waits until the first sector of DEV starts with WORD (read past the cache).
mailbox() {
  while [ "$(dd if=$1 bs=512 count=1 iflag=direct 2>/dev/null | head -c ${#2})" != "$2" ]; do
    usleep 100000
  done
}
# read4 DEV WHAT: reports the md5 of DEV's first 4 MiB (and, when it is not WANT, which
# chunks differ).
read4() {
  dd if=$1 of=/tmp/r bs=64k count=64 iflag=direct 2> /tmp/r.err
  say "$2" "$(md5 < /tmp/r)" "$(tail -1 /tmp/r.err)"
  say "CHUNKS-$2" $(chunks /tmp/r)
}
waitfor /dev/xvda 300
case "$role" in
  writer)
    waitfor /dev/xvdb 300
    dd if=/dev/urandom of=/tmp/a bs=64k count=64 2>/dev/null
    if dd if=/tmp/a of=/dev/xvda bs=64k oflag=direct conv=fsync 2>/dev/null; then
      say A "$(md5 < /tmp/a)"
    else
      say A-FAILED
    fi
    # Writes go on while dom0 snapshots: 1 MiB at a time between 16 and 32 MiB.
    ( n=0; f=0; dd if=/dev/urandom of=/tmp/bg bs=64k count=16 2>/dev/null
      while [ ! -e /tmp/stop-bg ]; do
        dd if=/tmp/bg of=/dev/xvda bs=64k seek=$((256 + (n % 16) * 16)) oflag=direct conv=fsync 2>/dev/null || f=$((f + 1))
        n=$((n + 1))
      done
      echo "$n $f" > /tmp/bg.done ) &
    dd if=/dev/urandom of=/tmp/b bs=64k count=64 2>/dev/null
    say CHUNKS-A $(chunks /tmp/a)
    say CHUNKS-B $(chunks /tmp/b)
    mailbox /dev/xvdb GO-B
    touch /tmp/stop-bg
    while [ ! -e /tmp/bg.done ]; do usleep 50000; done
    say BACKGROUND $(cat /tmp/bg.done)
    if dd if=/tmp/b of=/dev/xvda bs=64k oflag=direct conv=fsync 2>/dev/null; then
      say B "$(md5 < /tmp/b)"
    else
      say B-FAILED
    fi
    read4 /dev/xvda READBACK
    ;;
  check)
    for d in xvdb xvdc xvdd xvde; do waitfor /dev/$d 300; done
    read4 /dev/xvda READ-CLONE
    read4 /dev/xvdb READ-ORIG
    dd if=/dev/urandom of=/tmp/fill bs=64k count=256 2>/dev/null
    dd if=/tmp/fill of=/dev/xvdc bs=64k oflag=direct conv=fsync 2>/dev/null \
      && dd if=/tmp/fill of=/dev/xvdd bs=64k oflag=direct conv=fsync 2>/dev/null \
      && say FILLED || say FILL-FAILED
    rm -f /tmp/fill
    mailbox /dev/xvde GO
    field() { v=${2##*$1=}; echo "${v%% *}"; }
    med() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
    run() { blk-load --dev /dev/$1 --op $op --bs $bs --pattern $pat --qd $qd --ms 500 --offset 0 --span 16777216 2>&1; }
    for w in "read 4096 random 1 read-4k-rand-qd1" "read 65536 seq 32 read-64k-seq-qd32" \
             "write 4096 random 1 write-4k-rand-qd1" "write 65536 seq 32 write-64k-seq-qd32"; do
      set -- $w; op=$1; bs=$2; pat=$3; qd=$4; c=$5; ds=""; fs=""
      for r in 1 2 3; do
        if [ $r = 2 ]; then f=$(run xvdd); d=$(run xvdc); else d=$(run xvdc); f=$(run xvdd); fi
        echo "chain3: $d"; echo "flat:   $f"
        ds="$ds $(field kib_s "$d")"; fs="$fs $(field kib_s "$f")"
      done
      say BENCH "$c" "$(med $ds)" "$(med $fs)"
    done
    say BENCH-DONE
    ;;
  *) say ROLE-UNKNOWN "$role" ;;
esac
