/* SPDX-License-Identifier: GPL-2.0 */
/* Services (IPv4 ClusterIPs): DNAT to a backend on the client's egress path, and the reverse
 * translation of replies (also used for DNS proxy answers, see proxy.h). IPv6 ClusterIPs: lb6.h;
 * lb_dnat()/lb_revnat() at the end take either family. */
#ifndef CILIA_LB_H
#define CILIA_LB_H

#include "maps.h"
#include "lb6.h"

/* Rewrite the IPv4 address at addr_off and the port at port_off of a TCP/UDP packet, fixing the IP
 * and L4 checksums (a UDP checksum of 0 stays 0). */
static __always_inline int rewrite4(struct __sk_buff *skb, __u32 l4_off, __u8 proto, __u32 addr_off,
				    __u32 port_off, __be32 old_addr, __be32 new_addr, __be16 old_port,
				    __be16 new_port)
{
	__u32 csum_off = l4_off + (proto == IPPROTO_TCP ? 16 : 6);
	__u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, BPF_F_PSEUDO_HDR | mangled | 4) < 0 ||
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | 2) < 0 ||
	    bpf_l3_csum_replace(skb, ETH_HLEN + 10, old_addr, new_addr, 4) < 0 ||
	    bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0) < 0)
		return -1;
	return 0;
}

/* Service translation on the client's egress path: a packet to a ClusterIP:port gets a backend
 * (the connection's backend, or a random one for a new connection) before conntrack and policy,
 * so policy sees the backend (semantics.md §7). Returns 1 translated, 0 not a service, -1 drop
 * (a service without backends, or a failed rewrite). */
static __always_inline int lb4_dnat(struct __sk_buff *skb, struct flow *f)
{
	struct lb4_key sk = {.port = f->dport, .proto = f->proto};
	struct lb4_tuple t = {.sport = f->sport, .dport = f->dport, .proto = f->proto};
	struct lb4_value *svc, *be;
	struct lb4_addr chosen, front;
	struct lb4_addr *known;
	__be32 old_addr, new_addr;

	if (f->family != 4 || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP) || !f->dport)
		return 0;
	__builtin_memcpy(sk.addr, f->daddr, 4);
	svc = bpf_map_lookup_elem(&cilia_lb4, &sk);
	if (!svc)
		return 0;
	__builtin_memcpy(t.saddr, f->saddr, 4);
	__builtin_memcpy(t.daddr, f->daddr, 4);
	known = bpf_map_lookup_elem(&cilia_lb4_ct, &t);
	if (known && !(f->proto == IPPROTO_TCP && f->ct_create)) {
		chosen = *known;
	} else {
		if (!svc->count)
			return -1;
		sk.slot = bpf_get_prandom_u32() % svc->count + 1;
		be = bpf_map_lookup_elem(&cilia_lb4, &sk);
		if (!be)
			return -1;
		__builtin_memcpy(chosen.addr, be->addr, 4);
		chosen.port = be->port;
		chosen.pad = 0;
		bpf_map_update_elem(&cilia_lb4_ct, &t, &chosen, BPF_ANY);
	}
	/* the reply's translation back, keyed by the backend-side tuple (client first) */
	__builtin_memcpy(front.addr, f->daddr, 4);
	front.port = f->dport;
	front.pad = 0;
	__builtin_memcpy(t.daddr, chosen.addr, 4);
	t.dport = chosen.port;
	bpf_map_update_elem(&cilia_lb4_rev, &t, &front, BPF_ANY);

	__builtin_memcpy(&old_addr, f->daddr, 4);
	__builtin_memcpy(&new_addr, chosen.addr, 4);
	if (rewrite4(skb, f->l4_off, f->proto, ETH_HLEN + 16, f->l4_off + 2, old_addr, new_addr, f->dport,
		     chosen.port) < 0)
		return -1;
	__builtin_memcpy(f->daddr, chosen.addr, 4);
	f->dport = chosen.port;
	f->policy_port = bpf_ntohs(chosen.port);
	return 1;
}

/* A reply whose reversed tuple is in ``rev_map`` gets its source rewritten to the address and port
 * stored there: the ClusterIP:port of a service (cilia_lb4_rev) or the DNS server a redirected
 * query was sent to (cilia_dns_rev). Returns what the source became, NULL when nothing matched or
 * the rewrite failed. */
static __always_inline struct lb4_addr *revnat4(struct __sk_buff *skb, const struct flow *f, void *rev_map)
{
	struct lb4_tuple k = {.sport = f->dport, .dport = f->sport, .proto = f->proto};
	struct lb4_addr *orig;
	__be32 old_addr, new_addr;

	if (f->family != 4 || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP))
		return NULL;
	__builtin_memcpy(k.saddr, f->daddr, 4);
	__builtin_memcpy(k.daddr, f->saddr, 4);
	orig = bpf_map_lookup_elem(rev_map, &k);
	if (!orig)
		return NULL;
	__builtin_memcpy(&old_addr, f->saddr, 4);
	__builtin_memcpy(&new_addr, orig->addr, 4);
	if (rewrite4(skb, f->l4_off, f->proto, ETH_HLEN + 12, f->l4_off, old_addr, new_addr, f->sport,
		     orig->port) < 0)
		return NULL;
	return orig;
}

/* A reply from a service backend to its client gets the ClusterIP:port back as its source
 * (called on conntrack replies only: a translated connection's reply is one). */
static __always_inline void lb4_revnat(struct __sk_buff *skb, const struct flow *f)
{
	revnat4(skb, f, &cilia_lb4_rev);
}

/* The service translation of either family (lb4_dnat / lb6_dnat): 1 translated, 0 not a service,
 * -1 drop. */
static __always_inline int lb_dnat(struct __sk_buff *skb, struct flow *f)
{
	return f->family == 6 ? lb6_dnat(skb, f) : lb4_dnat(skb, f);
}

/* A conntrack reply's reverse translation, either family. */
static __always_inline void lb_revnat(struct __sk_buff *skb, const struct flow *f)
{
	if (f->family == 6)
		lb6_revnat(skb, f);
	else
		lb4_revnat(skb, f);
}

#endif
