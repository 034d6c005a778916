# Guest of the `netback` part (sourced by the guest's /init; `check` and `waitfor` are there).
# Its command line gives nb_ip (this guest's address), nb_peer (dom0's bridge) and nb_tag
# (which backend serves the vif: `kernel` or `ours`). It pings dom0 with small and with
# 8000-byte packets (MTU 9000: one frame over several ring slots, no IP fragments), then runs
# net-load against dom0's server, and prints for dom0's part (from the console log):
#   NB-RTT <tag> <small|large> <median ms>
#   NB-RUN <tag> <case> <round> <net-load line>    case: tx-N (guest → dom0) or rx-N
#   NB-DONE <tag>
arg() { sed -n "s/.*$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
nb_ip=$(arg nb_ip); nb_peer=$(arg nb_peer); nb_tag=$(arg nb_tag)
# Median of the `time=X ms` of ping's replies.
rtt() { sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}'; }
# IP reassemblies in / fragments made out (ReasmReqds/FragCreates of /proc/net/snmp).
reasm() { awk '/^Ip: [0-9]/ {print $15 "/" $20}' /proc/net/snmp; }
nb_main() {
  if ! waitfor /sys/class/net/eth0 300; then check "nb-$nb_tag:eth0" FAIL "no eth0"; return; fi
  ip addr add "$nb_ip/24" dev eth0 && ip link set eth0 up
  ok=""; i=0
  while [ $i -lt 120 ]; do
    if ping -c 1 -W 2 "$nb_peer" > /dev/null 2>&1; then ok=1; break; fi
    i=$((i+1))
  done
  if [ -z "$ok" ]; then check "nb-$nb_tag:ping" FAIL "no reply from $nb_peer in $i tries"; return; fi
  ping -c 10 -i 0.2 "$nb_peer" > /tmp/ping 2>&1
  got=$(grep -c 'bytes from' /tmp/ping)
  [ "$got" -ge 9 ] && check "nb-$nb_tag:ping" PASS "$got/10 replies from $nb_peer after $i retries" \
    || check "nb-$nb_tag:ping" FAIL "$got/10 replies: $(tail -2 /tmp/ping | tr '\n' ' ')"
  echo "NB-RTT $nb_tag small $(rtt < /tmp/ping)"
  # Large frames: dom0 raises the vif's and bridge's MTU once the vif is Connected.
  if ip link set eth0 mtu 9000; then
    check "nb-$nb_tag:mtu" PASS "eth0 mtu $(cat /sys/class/net/eth0/mtu)"
  else
    check "nb-$nb_tag:mtu" FAIL "netfront refused mtu 9000 (no feature-sg?)"
  fi
  r0=$(reasm); ok=""; i=0
  while [ $i -lt 60 ]; do
    if ping -c 1 -W 2 -s 8000 "$nb_peer" > /dev/null 2>&1; then ok=1; break; fi
    i=$((i+1))
  done
  ping -c 10 -i 0.2 -s 8000 "$nb_peer" > /tmp/ping 2>&1
  got=$(grep -c 'bytes from' /tmp/ping); r1=$(reasm)
  if [ -n "$ok" ] && [ "$got" -ge 9 ] && [ "$r0" = "$r1" ]; then
    check "nb-$nb_tag:ping-large" PASS "$got/10 replies of 8008 bytes, no IP fragments (reassembled/created $r0 -> $r1)"
  else
    check "nb-$nb_tag:ping-large" FAIL "ok=$ok $got/10 replies, fragments $r0 -> $r1: $(tail -2 /tmp/ping | tr '\n' ' ')"
  fi
  echo "NB-RTT $nb_tag large $(rtt < /tmp/ping)"
  # Throughput: three rounds of the four cases, interleaved.
  for r in 1 2 3; do
    for c in tx-1 tx-4 rx-1 rx-4; do
      case $c in tx-*) d=send ;; *) d=recv ;; esac
      echo "NB-RUN $nb_tag $c $r $(net-load $d --to "$nb_peer:5001" --streams "${c#*-}" --ms 3000 2>&1 | tr '\n' ' ')"
    done
  done
}
nb_main
echo "NB-DONE $nb_tag"
