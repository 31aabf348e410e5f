/* SPDX-License-Identifier: GPL-2.0 */
/* Remote identity (ipcache) and the policy lookup of semantics.md §5.5, mirrored step by step by
 * cilia/datapath/sim.py. */
#ifndef CILIA_POLICY_H
#define CILIA_POLICY_H

#include "maps.h"

static __always_inline __u32 lookup_identity(const struct flow *f, const __u8 *addr)
{
	struct ipcache_value *v;

	if (f->family == 4) {
		struct ipcache4_key k = {.prefixlen = 32};

		__builtin_memcpy(k.addr, addr, 4);
		v = bpf_map_lookup_elem(&cilia_ipcache4, &k);
	} else {
		struct ipcache6_key k = {.prefixlen = 128};

		__builtin_memcpy(k.addr, addr, 16);
		v = bpf_map_lookup_elem(&cilia_ipcache6, &k);
	}
	/* world: reserved:world for IPv4 (single-stack numbering), reserved:world-ipv6 for IPv6 as in a
	 * dual-stack Cilium (toEntities: [world-ipv6]) */
	return v ? v->identity : (f->family == 6 ? WORLD_IPV6_ID : WORLD_ID);
}

static __always_inline __u8 match_type(__u8 exact, __u8 prefix)
{
	if (exact)
		return prefix == 0 ? MATCH_L3_ONLY : (prefix > 8 ? MATCH_L3_L4 : MATCH_L3_PROTO);
	return prefix == 0 ? MATCH_ALL : (prefix > 8 ? MATCH_L4_ONLY : MATCH_PROTO_ONLY);
}

/* semantics.md §5.5: exact-identity LPM (a deny there drops), wildcard-identity LPM, then choose. */
static __always_inline void policy_lookup(__u32 ep_id, __u32 remote, __u8 dir, const struct flow *f,
					  struct verdict *v)
{
	struct policy_key k = {
		.prefixlen = POLICY_FULL_BITS,
		.ep_id = ep_id,
		.identity = remote,
		.direction = dir,
		.proto = f->proto,
		.dport = bpf_htons(f->policy_port),
	};
	struct policy_value *l3, *l4, *e;

	l3 = bpf_map_lookup_elem(&cilia_policy, &k);
	if (l3 && (l3->flags & POLICY_F_DENY)) {
		e = l3;
		v->exact = 1;
		v->reason = DROP_POLICY_DENY;
		goto out;
	}
	k.identity = 0;
	l4 = bpf_map_lookup_elem(&cilia_policy, &k);
	if (l4 && ((l4->flags & POLICY_F_DENY) || !l3 || l4->proxy_priority > l3->proxy_priority ||
		   (l4->proxy_priority == l3->proxy_priority && l4->lpm_prefix > l3->lpm_prefix))) {
		e = l4;
		v->exact = 0;
	} else if (l3) {
		e = l3;
		v->exact = 1;
	} else {
		v->reason = DROP_POLICY;
		v->match_type = MATCH_NONE;
		return;
	}
	if (e->flags & POLICY_F_DENY)
		v->reason = DROP_POLICY_DENY;
	else if (e->auth_type)
		v->reason = DROP_POLICY_AUTH_REQUIRED;
	else
		v->reason = 0;
out:
	v->cookie = e->cookie;
	v->lpm_prefix = e->lpm_prefix;
	v->proxy_port = v->reason ? 0 : e->proxy_port;
	v->match_type = match_type(v->exact, e->lpm_prefix);
}

#endif
