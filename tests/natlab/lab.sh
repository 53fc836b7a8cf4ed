#!/usr/bin/env bash
# A NAT lab in network namespaces, nothing linked to the root namespace.
#
#   lab.sh up P            public network: namespace ${P}pub, bridge 203.0.113.1/24 (+ .2)
#   lab.sh home P N TYPE   home N behind a NAT of TYPE, its hosts in namespace ${P}home$N
#   lab.sh unhome P N      remove home N (its NAT and every mapping with it)
#   lab.sh flush P N       forget home N's NAT mappings (conntrack -F: a NAT reboot)
#   lab.sh renumber P N    give home N's NAT a new public address, 203.0.113.(50+N), and
#                          forget its mappings (an ISP renumbering, a move to another network)
#   lab.sh shape P N KBIT  limit what reaches home N (its NAT's LAN side) to KBIT kbit/s: a
#                          token bucket of one packet (no bursts above the rate: a slow DSL
#                          line; a bigger bucket lets a probe's burst through at line rate)
#                          with 1 s of queue. (This kernel has no netem.)
#   lab.sh unshape P N     lift that limit
#   lab.sh down P          remove every namespace named ${P}*
#
# TYPE: public       the host sits on the public bridge at 203.0.113.(100+N), no NAT
#       full-cone    inbound UDP to the mapped address reaches the host (DNAT)
#       cone         endpoint-independent mapping, port-restricted filtering
#       symmetric    a new mapping per destination (MASQUERADE --random-fully)
#       udp-blocked  a cone NAT whose firewall drops all UDP from the home
#       tls-only     a cone NAT whose firewall passes only TCP to port 443
# Homes: LAN 10.0.N.0/24 (host 10.0.N.2), NAT WAN address 203.0.113.(10+N).
# Recipe and pitfalls: shared/notes/browser-and-nat-lab.md.
set -euo pipefail
cmd=${1:?usage: lab.sh up|home|unhome|flush|down PREFIX ...}
p=${2:?prefix}
pub="${p}pub"

# A new namespace with IPv6 off before any interface enters it: an interface would otherwise
# get a link-local address that turns from tentative to permanent a second or two later, and
# Chromium aborts a page's loads (ERR_NETWORK_CHANGED) when an address changes under it.
netns_add() {
  ip netns add "$1"
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$1" link set lo up
}

# Waits (bounded, 5 s) until interface $2 of namespace $1 is operationally up: the kernel
# reports a carrier change up to a second after `link set up`, and that report is a network
# change to a browser already started there.
wait_up() {
  for _ in $(seq 250); do
    [ "$(ip netns exec "$1" cat "/sys/class/net/$2/operstate")" = up ] && return 0
    sleep 0.02
  done
  echo "lab.sh: $2 in $1 did not come up" >&2
  exit 1
}

case "$cmd" in
up)
  netns_add "$pub"
  ip -n "$pub" link add br0 type bridge
  ip -n "$pub" link set br0 up
  ip -n "$pub" addr add 203.0.113.1/24 dev br0
  ip -n "$pub" addr add 203.0.113.2/24 dev br0
  ;;
home)
  n=${3:?home number}
  type=${4:?nat type}
  home="${p}home$n"
  netns_add "$home"
  if [ "$type" = public ]; then
    ip -n "$pub" link add "h$n" type veth peer name eth0 netns "$home"
    ip -n "$pub" link set "h$n" master br0 up
    ip -n "$home" addr add "203.0.113.$((100 + n))/24" dev eth0
    ip -n "$home" link set eth0 up
    wait_up "$home" eth0
    exit 0
  fi
  nat="${p}nat$n"
  netns_add "$nat"
  ip -n "$pub" link add "w$n" type veth peer name wan netns "$nat"
  ip -n "$pub" link set "w$n" master br0 up
  ip -n "$nat" addr add "203.0.113.$((10 + n))/24" dev wan
  ip -n "$nat" link set wan up
  ip -n "$nat" link add lan type veth peer name eth0 netns "$home"
  ip -n "$nat" addr add "10.0.$n.1/24" dev lan
  ip -n "$nat" link set lan up
  ip -n "$home" addr add "10.0.$n.2/24" dev eth0
  ip -n "$home" link set eth0 up
  ip -n "$home" route add default via "10.0.$n.1"
  ip netns exec "$nat" sysctl -qw net.ipv4.ip_forward=1
  ipt() { ip netns exec "$nat" iptables "$@"; }
  case "$type" in
  symmetric) ipt -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully ;;
  full-cone | cone | udp-blocked | tls-only) ipt -t nat -A POSTROUTING -o wan -j MASQUERADE ;;
  *)
    echo "lab.sh: unknown NAT type $type" >&2
    exit 2
    ;;
  esac
  if [ "$type" = full-cone ]; then
    ipt -t nat -A PREROUTING -i wan -p udp -j DNAT --to-destination "10.0.$n.2"
    ipt -A FORWARD -i wan -p udp -d "10.0.$n.2" -j ACCEPT
  fi
  if [ "$type" = udp-blocked ]; then
    ipt -A FORWARD -i lan -p udp -j DROP
  fi
  if [ "$type" = tls-only ]; then
    ipt -A FORWARD -i lan -p tcp --dport 443 -j ACCEPT
    ipt -A FORWARD -i lan -j DROP
  fi
  ipt -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  ipt -A FORWARD -i wan -j DROP
  # Without this a peer's early punch creates a conntrack entry that clashes with the later
  # outbound mapping, MASQUERADE picks another port, and even cone/cone fails.
  ipt -A INPUT -i wan -m conntrack --ctstate NEW -j DROP
  wait_up "$nat" wan
  wait_up "$home" eth0
  ;;
shape)
  n=${3:?home number}
  kbit=${4:?kbit/s}
  ip netns exec "${p}nat$n" tc qdisc replace dev lan root tbf rate "${kbit}kbit" burst 1600 \
    limit $((kbit * 1000 / 8))
  ;;
unshape)
  n=${3:?home number}
  ip netns exec "${p}nat$n" tc qdisc del dev lan root 2>/dev/null || true
  ;;
unhome)
  n=${3:?home number}
  # Deleting a veth end deletes its peer at once; a namespace is torn down asynchronously,
  # and the next home N would find its interface names still taken.
  ip -n "$pub" link del "w$n" 2>/dev/null || true
  ip -n "$pub" link del "h$n" 2>/dev/null || true
  ip netns delete "${p}home$n" 2>/dev/null || true
  ip netns delete "${p}nat$n" 2>/dev/null || true
  # The next home N reuses the addresses with new MAC addresses: forget the old ones, or the
  # public side keeps sending to a stale MAC until ARP revalidates (seconds, enough to make
  # ICE pick a relay where hole punching would have worked).
  ip -n "$pub" neigh flush dev br0 2>/dev/null || true
  ;;
flush)
  n=${3:?home number}
  ip netns exec "${p}nat$n" conntrack -F >/dev/null 2>&1 || true
  ;;
renumber)
  n=${3:?home number}
  ip -n "${p}nat$n" addr flush dev wan
  ip -n "${p}nat$n" addr add "203.0.113.$((50 + n))/24" dev wan
  ip netns exec "${p}nat$n" conntrack -F >/dev/null 2>&1 || true
  ip -n "$pub" neigh flush dev br0 2>/dev/null || true
  ;;
down)
  for ns in $(ip netns list | awk '{print $1}' | grep "^${p}" || true); do
    ip netns delete "$ns" 2>/dev/null || true
  done
  ;;
*)
  echo "lab.sh: unknown command $cmd" >&2
  exit 2
  ;;
esac
