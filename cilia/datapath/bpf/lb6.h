/* SPDX-License-Identifier: GPL-2.0 */
/* Services over IPv6 (IPv6 ClusterIPs of dual-stack and IPv6 single-stack Services): the same
 * translation as lb.h's IPv4 one, on IPv6 addresses. DNAT to a backend on the client's egress
 * path before conntrack and policy (policy decides on the backend), and the reverse translation of
 * replies. IPv6 has no header checksum: only the L4 checksum (whose pseudo header holds both
 * addresses) is fixed. The maps mirror cilia_lb4*: their layouts are in cilia/datapath/maps/lb.py. */
#ifndef CILIA_LB6_H
#define CILIA_LB6_H

#include "common.h"

/* cilia_lb6: per frontend, slot 0 = the service (count = number of backends), slots 1..count =
 * the backends, written backends first (as cilia_lb4). */
struct lb6_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 pad;
	__u16 slot;
	__u16 pad2;
};

struct lb6_value {
	__u8 addr[16]; /* backend address (slot > 0) */
	__be16 port; /* backend port (slot > 0) */
	__u16 count; /* number of backends (slot 0) */
};

/* client-side tuple -> chosen backend (cilia_lb6_ct); backend-side tuple -> frontend (cilia_lb6_rev) */
struct lb6_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct lb6_addr {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb6_key);
	__type(value, struct lb6_value);
	__uint(max_entries, CILIA_LB_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_lb6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb6_tuple);
	__type(value, struct lb6_addr);
	__uint(max_entries, CILIA_LB_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_lb6_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb6_tuple);
	__type(value, struct lb6_addr);
	__uint(max_entries, CILIA_LB_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_lb6_rev SEC(".maps");

/* Rewrite the IPv6 address at addr_off and the port at port_off of a TCP/UDP packet, fixing the
 * L4 checksum for both (the address through the pseudo header). */
static __always_inline int rewrite6(struct __sk_buff *skb, __u32 l4_off, __u8 proto, __u32 addr_off,
				    __u32 port_off, const __u8 *old_addr, const __u8 *new_addr, __be16 old_port,
				    __be16 new_port)
{
	__u32 csum_off = l4_off + (proto == IPPROTO_TCP ? 16 : 6);
	__u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be32 from[4], to[4];
	__s64 diff;

	__builtin_memcpy(from, old_addr, 16);
	__builtin_memcpy(to, new_addr, 16);
	diff = bpf_csum_diff(from, 16, to, 16, 0);
	if (diff < 0 || bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled) < 0 ||
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | 2) < 0 ||
	    bpf_skb_store_bytes(skb, addr_off, to, 16, 0) < 0 ||
	    bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0) < 0)
		return -1;
	return 0;
}

/* lb4_dnat for an IPv6 packet to an IPv6 ClusterIP:port. 1 translated, 0 not a service, -1 drop
 * (no backend, a failed rewrite). */
static __always_inline int lb6_dnat(struct __sk_buff *skb, struct flow *f)
{
	struct lb6_key sk = {.port = f->dport, .proto = f->proto};
	struct lb6_tuple t = {.sport = f->sport, .dport = f->dport, .proto = f->proto};
	struct lb6_value *svc, *be;
	struct lb6_addr chosen = {}, front = {};
	struct lb6_addr *known;

	if (f->family != 6 || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP) || !f->dport)
		return 0;
	__builtin_memcpy(sk.addr, f->daddr, 16);
	svc = bpf_map_lookup_elem(&cilia_lb6, &sk);
	if (!svc)
		return 0;
	__builtin_memcpy(t.saddr, f->saddr, 16);
	__builtin_memcpy(t.daddr, f->daddr, 16);
	known = bpf_map_lookup_elem(&cilia_lb6_ct, &t);
	if (known && !(f->proto == IPPROTO_TCP && f->ct_create)) {
		chosen = *known;
	} else {
		if (!svc->count)
			return -1;
		sk.slot = bpf_get_prandom_u32() % svc->count + 1;
		be = bpf_map_lookup_elem(&cilia_lb6, &sk);
		if (!be)
			return -1;
		__builtin_memcpy(chosen.addr, be->addr, 16);
		chosen.port = be->port;
		bpf_map_update_elem(&cilia_lb6_ct, &t, &chosen, BPF_ANY);
	}
	__builtin_memcpy(front.addr, f->daddr, 16);
	front.port = f->dport;
	__builtin_memcpy(t.daddr, chosen.addr, 16);
	t.dport = chosen.port;
	bpf_map_update_elem(&cilia_lb6_rev, &t, &front, BPF_ANY);

	if (rewrite6(skb, f->l4_off, f->proto, ETH_HLEN + 24, f->l4_off + 2, f->daddr, chosen.addr, f->dport,
		     chosen.port) < 0)
		return -1;
	__builtin_memcpy(f->daddr, chosen.addr, 16);
	f->dport = chosen.port;
	f->policy_port = bpf_ntohs(chosen.port);
	return 1;
}

/* revnat4 for IPv6: a reply whose reversed tuple is in ``rev_map`` (cilia_lb6_rev, or another map
 * of lb6_tuple -> lb6_addr) gets the stored address and port as its source. What the source
 * became, NULL when nothing matched or the rewrite failed. */
static __always_inline struct lb6_addr *revnat6(struct __sk_buff *skb, const struct flow *f, void *rev_map)
{
	struct lb6_tuple k = {.sport = f->dport, .dport = f->sport, .proto = f->proto};
	struct lb6_addr *orig;

	if (f->family != 6 || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP))
		return NULL;
	__builtin_memcpy(k.saddr, f->daddr, 16);
	__builtin_memcpy(k.daddr, f->saddr, 16);
	orig = bpf_map_lookup_elem(rev_map, &k);
	if (!orig)
		return NULL;
	if (rewrite6(skb, f->l4_off, f->proto, ETH_HLEN + 8, f->l4_off, f->saddr, orig->addr, f->sport,
		     orig->port) < 0)
		return NULL;
	return orig;
}

/* The reverse translation of a service reply (cilia_lb6_rev). */
static __always_inline int lb6_revnat(struct __sk_buff *skb, const struct flow *f)
{
	return revnat6(skb, f, &cilia_lb6_rev) ? 1 : 0;
}

#endif
