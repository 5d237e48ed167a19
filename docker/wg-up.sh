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
#   ROOST_BUS_RELAY_PORT  the bus relay's port on the tunnel address (4470;
#                  roostctl bus relay, bus_relay_port)
#   ROOST_LAN_PREFIX  the home LAN's IPv4 prefixes (comma or space
#                  separated, e.g. 192.168.1.0/24): connections this server
#                  opens to them go the home way, not into the tunnel
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
#     the tunnel are answered from the tunnel address, by the main table;
#   - rule 102 sends what goes to ROOST_LAN_PREFIX (a NAS, a printer, a
#     LAN relay) to the old default route too: without it, only replies
#     find the LAN, and a connection this server opens to a LAN host that
#     is not on one of its own links goes into the tunnel.
#
# The bus relay (roostctl bus relay: busd's tap for the owner's devices,
# on the tunnel address) is reached through the tunnel only, from the
# devices' addresses (wg_net .10-.254): chain ROOST-RELAY drops its port
# on any other interface, so a home-LAN host sending to the tunnel address
# with a device's address as source gets nowhere. iptables is required
# with a tunnel: without it the script stops rather than leave the port
# guarded by the relay alone.
#
# With arguments, runs them once set up (tests: `wg-up.sh true`); without,
# stays (docker-init reaps wireguard-go).
set -eu
DIR=${ROOST_WG_DIR:-/var/lib/roost/wg}
VPS_IP=${ROOST_VPS_IP:-}
PORT=${ROOST_WG_PORT:-51820}
NET=${ROOST_WG_NET:-10.44.0.0/24}
IF=${ROOST_WG_IF:-roost0}
RELAY_PORT=${ROOST_BUS_RELAY_PORT:-4470}
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
# The LAN prefixes, checked before anything changes.
LAN=$(echo "${ROOST_LAN_PREFIX:-}" | tr ',' ' ')
for p in $LAN; do
	if ! echo "$p" | awk -F'[./]' 'NF != 5 { exit 1 }
		{ for (i = 1; i <= 4; i++) if ($i !~ /^[0-9]+$/ || $i > 255) exit 1
		  if ($5 !~ /^[0-9]+$/ || $5 > 32) exit 1 }'; then
		say "ROOST_LAN_PREFIX: '$p' is not an IPv4 prefix (like 192.168.1.0/24)"
		exit 1
	fi
done
case $NET in
*.0/24) SERVER=${NET%.0/24}.2; DEVICES=${NET%.0/24}.10-${NET%.0/24}.254 ;;
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
# Before the address exists (the relay cannot listen before it does).
if ! command -v iptables >/dev/null; then
	say "iptables missing: needed to keep the bus relay's port $RELAY_PORT to the tunnel"
	exit 1
fi
iptables -w -N ROOST-RELAY 2>/dev/null || iptables -w -F ROOST-RELAY
iptables -w -A ROOST-RELAY -i "$IF" -m iprange --src-range "$DEVICES" -j RETURN
iptables -w -A ROOST-RELAY -j DROP
iptables -w -C INPUT -p tcp --dport "$RELAY_PORT" -j ROOST-RELAY 2>/dev/null ||
	iptables -w -I INPUT 1 -p tcp --dport "$RELAY_PORT" -j ROOST-RELAY
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
while ip rule del priority 102 2>/dev/null; do :; done
if [ -n "$GW" ] && [ -n "$DEV" ]; then
	ip route replace default via "$GW" dev "$DEV" table "$TABLE"
	for a in $(ip -4 -o addr show | awk -v t="$IF" '$2 != "lo" && $2 != t { sub("/.*", "", $4); print $4 }'); do
		ip rule add priority 101 from "$a" lookup "$TABLE"
	done
	for p in $LAN; do
		ip rule add priority 102 to "$p" lookup "$TABLE"
	done
elif [ -n "$LAN" ]; then
	say "ROOST_LAN_PREFIX set, but there was no default route to reach it by"
	exit 1
fi
ip route replace default dev "$IF"
say "tunnel $IF up: $SERVER, VPS $EP; local replies via ${GW:-the local networks only}${DEV:+ on $DEV}${LAN:+; LAN $LAN too}"
stay "$@"
