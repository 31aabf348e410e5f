/* SPDX-License-Identifier: GPL-2.0 */
/* Conntrack (cilia_ct): one entry per (endpoint, direction, original tuple), opened by an allowed
 * forward packet; replies of the connection pass without a policy lookup (semantics.md §4.9). */
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

static __always_inline void ct_key_of(struct ct_key *ck, __u32 ep_id, __u8 dir, const struct flow *f)
{
	ck->ep_id = ep_id;
	ck->direction = dir;
	ck->proto = f->proto;
	ck->family = f->family;
	__builtin_memcpy(ck->saddr, f->saddr, 16);
	__builtin_memcpy(ck->daddr, f->daddr, 16);
	ck->sport = f->sport;
	ck->dport = f->dport;
}

/* The live entry of the connection this packet replies to (the reverse tuple, recorded by this
 * endpoint's policy in the other direction), refreshed; NULL when the packet is not a reply. */
static __always_inline struct ct_value *ct_reply_at(struct __sk_buff *skb, const struct config_value *cfg,
						    __u32 ep_id, __u8 dir, const struct flow *f, __u64 now)
{
	struct ct_key ck = {
		.ep_id = ep_id,
		.direction = !dir,
		.proto = f->proto,
		.family = f->family,
		.sport = f->dport,
		.dport = f->sport,
	};
	struct ct_value *ct;

	__builtin_memcpy(ck.saddr, f->daddr, 16);
	__builtin_memcpy(ck.daddr, f->saddr, 16);
	ct = bpf_map_lookup_elem(&cilia_ct, &ck);
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
						   const struct ct_key *ck, struct ct_value *ct, const struct flow *f,
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

		bpf_map_update_elem(&cilia_ct, ck, &nv, BPF_ANY);
	}
	return NULL;
}

static __always_inline struct ct_value *ct_forward(struct __sk_buff *skb, const struct config_value *cfg,
						   const struct ct_key *ck, const struct flow *f,
						   const struct verdict *v, __u32 new_flags, __u32 *old_flags)
{
	return ct_forward_known(skb, cfg, ck, bpf_map_lookup_elem(&cilia_ct, ck), f, v, new_flags, old_flags,
				bpf_ktime_get_ns());
}

#endif
