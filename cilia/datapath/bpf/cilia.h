/* SPDX-License-Identifier: GPL-2.0 */
/* Layouts shared by the datapath programs and the Python map modules
 * (the modules in cilia/datapath/maps mirror every struct here byte for byte). */
#ifndef CILIA_H
#define CILIA_H

#include <linux/types.h>

/* Map sizes. The Python side reads them from the loaded maps, not from here. */
#define CILIA_IPCACHE_MAX 524288
#define CILIA_ENDPOINTS_MAX 4096
#define CILIA_LXC_MAX 8192 /* two addresses (IPv4 and its IPv6 twin) per endpoint */
#define CILIA_POLICY_MAX 1048576
#define CILIA_CT_MAX 262144
#define CILIA_EVENTS_BYTES (1 << 20)
#define CILIA_METRICS_MAX 64
#define CILIA_LB_MAX 65536
#define CILIA_LB_CT_MAX 65536

/* endpoint flags (set by user space) */
#define EP_F_POLICY_READY 0x1 /* cleared while a sync is incomplete or failed: drop all */
#define EP_F_ENFORCE_INGRESS 0x2
#define EP_F_ENFORCE_EGRESS 0x4
#define EP_F_AUDIT 0x8 /* policy drops become allows, flagged audited */

#define DIR_INGRESS 0
#define DIR_EGRESS 1

#define DROP_POLICY 133
#define DROP_POLICY_DENY 181
#define DROP_POLICY_AUTH_REQUIRED 189
#define DROP_PROXY_LOOKUP_FAILED 178 /* Cilium's number: the proxy port has no listener */
#define DROP_OUTSIDE_LAB 250 /* cilia's own (Cilium uses none above 210): see guard.h */

/* skb marks of proxy traffic (low 16 bits; the high 16 bits carry a proxy port where noted).
 * CILIA_MARK_TO_PROXY: a packet assigned to a local proxy socket; the node's `ip rule fwmark
 * 0xc1a/0xffff` sends it to a `local` route table so that the stack delivers it locally
 * (cilia/proxy/transparent.py installs both). CILIA_MARK_HAIRPIN | port << 16: to_container (tc
 * egress, where bpf_sk_assign is not available) hands the packet to the same device's ingress,
 * where from_container assigns it. CILIA_MARK_PROXY_INGRESS: set (SO_MARK) by an ingress proxy on
 * its onward connections, which the destination's policy already sent through that proxy. Marks
 * never cross a network namespace (the kernel scrubs them), so a pod cannot forge them. */
#define CILIA_MARK_MASK 0xffff
#define CILIA_MARK_TO_PROXY 0x0c1a
#define CILIA_MARK_HAIRPIN 0x0c1b
#define CILIA_MARK_PROXY_INGRESS 0x0c1c

#define MATCH_NONE 0
#define MATCH_L3_ONLY 1
#define MATCH_L3_L4 2
#define MATCH_L4_ONLY 3
#define MATCH_ALL 4
#define MATCH_L3_PROTO 5
#define MATCH_PROTO_ONLY 6

struct ipcache4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct ipcache6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;
};

struct endpoint_value {
	__u32 ep_id;
	__u32 identity;
	__u32 flags;
	__u32 pad;
};

/* Local endpoints by address (as Cilium's lxc map): written by the agent from its own state when a
 * pod's device is set up, so host routing finds the destination's device and MACs without a fib
 * lookup. IPv4 in addr[0..3], the rest zero (as struct flow holds it). */
struct lxc_key {
	__u8 family; /* 4 or 6 */
	__u8 pad[3];
	__u8 addr[16];
};

struct lxc_value {
	__u8 macs[12]; /* destination (the pod's eth0) then source (the host veth): as on the wire */
	__u32 ifindex; /* the host veth */
	__u32 ep_id; /* the endpoint the entry was written for: must still own ifindex */
};

/* Policy LPM key: endpoint, peer identity and direction are always fully matched
 * (POLICY_FIXED_BITS); the variable part is proto(8) then port(16, network order). */
#define POLICY_FIXED_BITS 72
#define POLICY_FULL_BITS 96
struct policy_key {
	__u32 prefixlen;
	__u32 ep_id;
	__u32 identity;
	__u8 direction;
	__u8 proto;
	__be16 dport;
};

#define POLICY_F_DENY 0x1
struct policy_value {
	__u32 cookie; /* names the rules in user space's cookie table */
	__be16 proxy_port;
	__u8 flags;
	__u8 lpm_prefix; /* 0, 8 or 8 + port prefix: the match length after identity+direction */
	__u8 proxy_priority;
	__u8 auth_type;
	__u16 pad;
};

/* Conntrack: one entry per (endpoint, direction, original tuple); IPv4 in cilia_ct4 (a 20-byte key:
 * hashing is a large part of a packet's cost, and a lookup hashes the whole key), IPv6 in cilia_ct
 * (family 6). */
struct ct_key4 {
	__u32 ep_id;
	__u8 direction;
	__u8 proto;
	__be16 sport;
	__be16 dport;
	__u16 pad;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct ct_key {
	__u32 ep_id;
	__u8 direction;
	__u8 proto;
	__u8 family; /* 4 or 6 */
	__u8 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
};

#define CT_F_CLOSING 0x1 /* a FIN or RST was seen */
#define CT_F_REPLIED 0x2 /* TCP: a reply was seen, the connection is past its opening */
#define CT_F_PROXY_REDIRECT 0x4 /* the connection goes to a local proxy (port: CT_PROXY_PORT_SHIFT) */
#define CT_F_PROXY_PEER 0x8 /* opened by a socket of the node (a proxy's onward connection): replies go to it */
#define CT_F_PROXY_ONWARD 0x10 /* the node's socket on this tuple is an ingress proxy's own onward connection */
#define CT_PROXY_PORT_SHIFT 16 /* flags >> 16 = the redirected connection's proxy port, host order */
struct ct_value {
	__u64 expires_ns; /* bpf_ktime_get_ns() based */
	__u64 packets;
	__u64 bytes;
	__u32 cookie;
	__u32 flags;
};

#define EV_F_ALLOWED 0x1
#define EV_F_AUDITED 0x2
#define EV_F_EXACT 0x4 /* decided by the exact-identity entry */
#define EV_F_NO_ENDPOINT 0x8
#define EV_F_NOT_READY 0x10
#define EV_F_REDIRECTED 0x20 /* allowed and sent to the local proxy on proxy_port */
struct event {
	__u64 ts_ns;
	__u32 ep_id;
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 cookie;
	__u32 suppressed; /* events of this endpoint dropped by the rate limit before this one */
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u16 reason;
	__u8 proto;
	__u8 family;
	__u8 direction;
	__u8 match_type;
	__u8 lpm_prefix;
	__u8 flags;
	__u16 proxy_port; /* host order, with EV_F_REDIRECTED (in the struct's tail padding) */
};

struct ratelimit_value {
	__u64 window_ns;
	__u32 count;
	__u32 suppressed;
};

struct config_value {
	__u32 events_per_sec; /* per endpoint; 0 = default */
	__u32 ct_timeout_s; /* non-TCP; 0 = default */
	__u32 ct_tcp_timeout_s; /* 0 = default */
	__u32 flags; /* CFG_F_* */
};

#define CFG_F_HOST_ROUTING 0x1 /* pod to pod on this node by bpf_redirect_peer (datapath.c) */
#define CFG_F_ROUTE_OUT 0x2 /* with it: out to world hosts and other nodes by bpf_redirect_neigh */
#define CFG_F_SERVICES 0x4 /* a service frontend exists: lb_dnat/lb_revnat look the maps up (set before the
                                * first frontend is written, cleared after the last is gone) */

/* metrics index: direction * METRIC_DIR_STRIDE + slot; global slots after both directions */
#define METRIC_FORWARDED 0
#define METRIC_DROP_POLICY 1
#define METRIC_DROP_DENY 2
#define METRIC_DROP_AUTH 3
#define METRIC_AUDITED 4
#define METRIC_REPLY 5
#define METRIC_DROP_NO_ENDPOINT 6
#define METRIC_DROP_NOT_READY 7
#define METRIC_DIR_STRIDE 8
#define METRIC_EVENTS_LOST 16
#define METRIC_EVENTS_SUPPRESSED 17
/* a second per-direction block: METRIC_EXT_BASE + direction * METRIC_DIR_STRIDE + slot */
#define METRIC_EXT_BASE 32
#define METRIC_X_DROP_OUTSIDE_LAB 0
#define METRIC_X_REDIRECTED 1
#define METRIC_X_DROP_PROXY 2
struct metric_value {
	__u64 packets;
	__u64 bytes;
};

/* Services (IPv4): ClusterIP:port/proto -> backends, DNAT on the client pod's egress path.
 * cilia_lb4 holds, per frontend, slot 0 = the service (count = number of backends) and slots
 * 1..count = the backends. User space writes the backends before the count, so a reader never
 * picks a slot that is not there yet. */
struct lb4_key {
	__u8 addr[4];
	__be16 port;
	__u8 proto;
	__u8 pad;
	__u16 slot;
	__u16 pad2;
};

struct lb4_value {
	__u8 addr[4]; /* backend address (slot > 0) */
	__be16 port; /* backend port (slot > 0) */
	__u16 count; /* number of backends (slot 0) */
};

/* One connection through a service: client tuple -> chosen backend (cilia_lb4_ct, keyed by the
 * client-side tuple) and backend-side tuple -> frontend (cilia_lb4_rev, for replies). */
struct lb4_tuple {
	__u8 saddr[4];
	__u8 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct lb4_addr {
	__u8 addr[4];
	__be16 port;
	__u16 pad;
};

#endif
