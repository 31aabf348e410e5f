/* SPDX-License-Identifier: GPL-2.0 */
/* Conntrack (cilia_ct4 for IPv4, cilia_ct for IPv6): one entry per (endpoint, direction, original
 * tuple), opened by an allowed forward packet; replies of the connection pass without a policy
 * lookup (semantics.md §4.9). */
#ifndef CILIA_CONNTRACK_H
#define CILIA_CONNTRACK_H

#include "maps.h"

static __always_inline __u64 ct_lifetime_s(const struct config_value *cfg, __u8 proto)
{
	if (proto == IPPROTO_TCP)
		return cfg && cfg->ct_tcp_timeout_s ? cfg->ct_tcp_timeout_s : CT_TCP_TIMEOUT_S;
	return cfg && cfg->ct_timeout_s ? cfg->ct_timeout_s : CT_TIMEOUT_S;
}

/* a closing connection keeps its entry only briefly, so a reused tuple is not taken for a reply */
static __always_inline void ct_closing(struct ct_value *ct)
{
	__u64 close_at = bpf_ktime_get_ns() + CT_CLOSE_TIMEOUT_S * NSEC;

	ct->flags |= CT_F_CLOSING;
	if (ct->expires_ns > close_at)
		ct->expires_ns = close_at;
}

/* A connection's key in the map of its family (every byte written: the hash covers the padding). */
union ct_key_any {
	struct ct_key k6;
	struct ct_key4 k4;
};

static __always_inline void ct_key_set(union ct_key_any *ck, __u32 ep_id, __u8 dir, __u8 proto, __u8 family,
				       const __u8 *saddr, const __u8 *daddr, __be16 sport, __be16 dport)
{
	if (family == 4) {
		ck->k4.ep_id = ep_id;
		ck->k4.direction = dir;
		ck->k4.proto = proto;
		ck->k4.sport = sport;
		ck->k4.dport = dport;
		ck->k4.pad = 0;
		__builtin_memcpy(ck->k4.saddr, saddr, 4);
		__builtin_memcpy(ck->k4.daddr, daddr, 4);
		return;
	}
	ck->k6.ep_id = ep_id;
	ck->k6.direction = dir;
	ck->k6.proto = proto;
	ck->k6.family = family;
	ck->k6.pad = 0;
	__builtin_memcpy(ck->k6.saddr, saddr, 16);
	__builtin_memcpy(ck->k6.daddr, daddr, 16);
	ck->k6.sport = sport;
	ck->k6.dport = dport;
}

static __always_inline void ct_key_of(union ct_key_any *ck, __u32 ep_id, __u8 dir, const struct flow *f)
{
	ct_key_set(ck, ep_id, dir, f->proto, f->family, f->saddr, f->daddr, f->sport, f->dport);
}

static __always_inline struct ct_value *ct_lookup(const union ct_key_any *ck, __u8 family)
{
	if (family == 4)
		return bpf_map_lookup_elem(&cilia_ct4, &ck->k4);
	return bpf_map_lookup_elem(&cilia_ct, &ck->k6);
}

/* The live entry of the connection this packet replies to (the reverse tuple, recorded by this
 * endpoint's policy in the other direction), refreshed; NULL when the packet is not a reply. */
static __always_inline struct ct_value *ct_reply_at(struct __sk_buff *skb, const struct config_value *cfg,
						    __u32 ep_id, __u8 dir, const struct flow *f, __u64 now)
{
	union ct_key_any ck;
	struct ct_value *ct;

	ct_key_set(&ck, ep_id, !dir, f->proto, f->family, f->daddr, f->saddr, f->dport, f->sport);
	ct = ct_lookup(&ck, f->family);
	if (!ct || ct->expires_ns <= now)
		return NULL;
	ct->packets += 1;
	ct->bytes += skb->len;
	if (f->proto == IPPROTO_TCP && !(ct->flags & (CT_F_REPLIED | CT_F_CLOSING))) {
		/* the first reply: the connection is open, it gets the full lifetime */
		ct->flags |= CT_F_REPLIED;
		ct->expires_ns = now + ct_lifetime_s(cfg, IPPROTO_TCP) * NSEC;
	}
	if (f->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
		ct_closing(ct);
	return ct;
}

static __always_inline struct ct_value *ct_reply(struct __sk_buff *skb, const struct config_value *cfg,
						 __u32 ep_id, __u8 dir, const struct flow *f)
{
	return ct_reply_at(skb, cfg, ep_id, dir, f, bpf_ktime_get_ns());
}

/* An allowed forward packet: refresh the live entry of its connection and return it (its flags
 * before this packet in *old_flags), or open one (TCP only on a pure SYN, so a flushed connection
 * cannot be resurrected by a mid-stream packet) and return NULL. ct: the caller's lookup of ck, so
 * that a caller that needed the entry before its verdict hashes the long key once per packet; now:
 * the packet's time, read once for both sides of a host-routed packet. */
static __always_inline struct ct_value *ct_forward_known(struct __sk_buff *skb, const struct config_value *cfg,
						   const union ct_key_any *ck, struct ct_value *ct, const struct flow *f,
						   const struct verdict *v, __u32 new_flags, __u32 *old_flags, __u64 now)
{
	__u64 timeout = ct_lifetime_s(cfg, f->proto);

	if (ct && ct->expires_ns > now) {
		*old_flags = ct->flags;
		if (f->proto == IPPROTO_TCP && f->ct_create)
			ct->flags = new_flags; /* a new SYN on the tuple: a new connection */
		/* until the peer answers, a TCP entry lives only as long as an opening may take */
		if (f->proto == IPPROTO_TCP && !(ct->flags & CT_F_REPLIED) && timeout > CT_SYN_TIMEOUT_S)
			timeout = CT_SYN_TIMEOUT_S;
		if (!(ct->flags & CT_F_CLOSING))
			ct->expires_ns = now + timeout * NSEC;
		if (f->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
			ct_closing(ct);
		ct->packets += 1;
		ct->bytes += skb->len;
		return ct;
	}
	if (f->ct_create) {
		if (f->proto == IPPROTO_TCP && timeout > CT_SYN_TIMEOUT_S)
			timeout = CT_SYN_TIMEOUT_S;
		struct ct_value nv = {
			.expires_ns = now + timeout * NSEC,
			.packets = 1,
			.bytes = skb->len,
			.cookie = v->cookie,
			.flags = new_flags,
		};

		if (f->family == 4)
			bpf_map_update_elem(&cilia_ct4, &ck->k4, &nv, BPF_ANY);
		else
			bpf_map_update_elem(&cilia_ct, &ck->k6, &nv, BPF_ANY);
	}
	return NULL;
}

static __always_inline struct ct_value *ct_forward(struct __sk_buff *skb, const struct config_value *cfg,
						   const union ct_key_any *ck, const struct flow *f,
						   const struct verdict *v, __u32 new_flags, __u32 *old_flags)
{
	return ct_forward_known(skb, cfg, ck, ct_lookup(ck, f->family), f, v, new_flags, old_flags,
				bpf_ktime_get_ns());
}

#endif
