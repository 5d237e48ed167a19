#!/bin/sh
# docker/wg-up.sh — this server's end of the WireGuard tunnel to its VPS
# (issue 7): the entrypoint of the container whose network namespace smtpd
# and imapd join. Run in that namespace with NET_ADMIN (and /dev/net/tun
# where the kernel has no WireGuard: wireguard-go is used then).
#
#   ROOST_WG_DIR   the keys of `roostctl wg keygen` (server.key, vps.key)
#   ROOST_VPS_IP   the VPS's public IPv4 address
#   ROOST_WG_PORT  its WireGuard port (51820)
#   ROOST_WG_NET   the tunnel's /24 (10.44.0.0/24): the VPS .1, this server .2
#   ROOST_WG_IF    the interface's name (roost0)
#   ROOST_WG_ENDPOINT  where to reach the VPS's WireGuard, if not at
#                  ROOST_VPS_IP:ROOST_WG_PORT (a VPS seen at another address)
#
# Without ROOST_VPS_IP or the keys there is no tunnel: the namespace keeps
# the network it was given (a test machine, a server with its own address).
#
# Routing, when the tunnel is up:
#   - the default route goes into the tunnel: the server's own connections
#     (outbound mail) leave from the VPS's address, never the home address;
#   - the VPS endpoint itself stays on the old default route;
#   - replies go back the way the connection came: rule 100 consults the
#     main table without its default route (the local networks), rule 101
#     sends what leaves from one of the namespace's own non-tunnel addresses
#     (a home-LAN client that came in through the published ports, whatever
#     its prefix) to the old default route. Connections that came through
#     the tunnel are answered from the tunnel address, by the main table.
#
# With arguments, runs them once set up (tests: `wg-up.sh true`); without,
# stays (docker-init reaps wireguard-go).
set -eu
DIR=${ROOST_WG_DIR:-/var/lib/roost/wg}
VPS_IP=${ROOST_VPS_IP:-}
PORT=${ROOST_WG_PORT:-51820}
NET=${ROOST_WG_NET:-10.44.0.0/24}
IF=${ROOST_WG_IF:-roost0}
TABLE=51821

say() { echo "roost-wg: $*" >&2; }
stay() {
	if [ "$#" -gt 0 ]; then exec "$@"; fi
	exec sleep infinity
}

if [ -z "$VPS_IP" ] || [ ! -r "$DIR/server.key" ] || [ ! -r "$DIR/vps.key" ]; then
	say "no tunnel (set vps_ip and run roostctl wg keygen for one): the network is the container's own"
	stay "$@"
fi
case $NET in
*.0/24) SERVER=${NET%.0/24}.2 ;;
*) say "wg_net $NET: must be an IPv4 network address with /24"; exit 1 ;;
esac
VPS_PUB=$(wg pubkey < "$DIR/vps.key")

EP=${ROOST_WG_ENDPOINT:-$VPS_IP:$PORT}
EP_IP=${EP%:*}
# The way to the endpoint now: kept when the default route goes into the tunnel.
route=$(ip -4 route get "$EP_IP" 2>/dev/null | head -1) || true
EP_GW=$(echo "$route" | awk '{ for (i = 1; i < NF; i++) if ($i == "via") { print $(i + 1); exit } }')
EP_DEV=$(echo "$route" | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
if [ -z "$EP_DEV" ]; then
	say "no route to the VPS at $EP_IP"
	exit 1
fi
# The default route before the tunnel (if any): replies to whoever came in
# through it go back that way.
GW=$(ip -4 route show default | awk '{ print $3; exit }')
DEV=$(ip -4 route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')

if ! ip link add "$IF" type wireguard 2>/dev/null; then
	say "no WireGuard in this kernel: wireguard-go (userspace)"
	WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go "$IF"
fi
wg set "$IF" private-key "$DIR/server.key" \
	peer "$VPS_PUB" endpoint "$EP" allowed-ips 0.0.0.0/0 persistent-keepalive 25
ip addr replace "$SERVER/24" dev "$IF"
ip link set "$IF" up

if [ -n "$EP_GW" ]; then
	ip route replace "$EP_IP/32" via "$EP_GW" dev "$EP_DEV"
else
	ip route replace "$EP_IP/32" dev "$EP_DEV"
fi
ip rule del priority 100 2>/dev/null || true
ip rule add priority 100 lookup main suppress_prefixlength 0
while ip rule del priority 101 2>/dev/null; do :; done
if [ -n "$GW" ] && [ -n "$DEV" ]; then
	ip route replace default via "$GW" dev "$DEV" table "$TABLE"
	for a in $(ip -4 -o addr show | awk -v t="$IF" '$2 != "lo" && $2 != t { sub("/.*", "", $4); print $4 }'); do
		ip rule add priority 101 from "$a" lookup "$TABLE"
	done
fi
ip route replace default dev "$IF"
say "tunnel $IF up: $SERVER, VPS $EP; local replies via ${GW:-the local networks only}${DEV:+ on $DEV}"
stay "$@"
