/* SPDX-License-Identifier: GPL-2.0 */
/* Policy verdict events (cilia_events ring buffer), rate-limited per endpoint (cilia_evrl). */
#ifndef CILIA_EVENTS_H
#define CILIA_EVENTS_H

#include "metrics.h"

/* ifindex: the endpoint's device (host routing decides a destination's ingress on the source's) */
static __always_inline void emit_on(struct __sk_buff *skb, __u32 ifindex, const struct config_value *cfg,
				    __u32 ep_id, __u32 src_id, __u32 dst_id, __u8 dir, const struct flow *f,
				    const struct verdict *v, __u8 flags)
{
	__u32 limit = cfg && cfg->events_per_sec ? cfg->events_per_sec : 1000;
	struct ratelimit_value *rl, fresh = {};
	__u64 now = bpf_ktime_get_ns();
	__u32 suppressed = 0;
	struct event *ev;

	rl = bpf_map_lookup_elem(&cilia_evrl, &ep_id);
	if (!rl) {
		fresh.window_ns = now;
		bpf_map_update_elem(&cilia_evrl, &ep_id, &fresh, BPF_NOEXIST);
		rl = bpf_map_lookup_elem(&cilia_evrl, &ep_id);
		if (!rl)
			return;
	}
	if (now - rl->window_ns > NSEC) {
		rl->window_ns = now;
		rl->count = 0;
	}
	if (rl->count >= limit) {
		__sync_fetch_and_add(&rl->suppressed, 1);
		count(METRIC_EVENTS_SUPPRESSED, 0);
		return;
	}
	__sync_fetch_and_add(&rl->count, 1);
	ev = bpf_ringbuf_reserve(&cilia_events, sizeof(*ev), 0);
	if (!ev) {
		count(METRIC_EVENTS_LOST, 0);
		return;
	}
	suppressed = rl->suppressed;
	if (suppressed)
		__sync_fetch_and_add(&rl->suppressed, -suppressed);
	ev->ts_ns = now;
	ev->ep_id = ep_id;
	ev->ifindex = ifindex;
	ev->src_identity = src_id;
	ev->dst_identity = dst_id;
	ev->cookie = v->cookie;
	ev->suppressed = suppressed;
	__builtin_memcpy(ev->saddr, f->saddr, 16);
	__builtin_memcpy(ev->daddr, f->daddr, 16);
	ev->sport = f->sport;
	ev->dport = f->proto == IPPROTO_ICMP || f->proto == IPPROTO_ICMPV6 ? bpf_htons(f->policy_port)
									     : f->dport;
	ev->reason = v->reason;
	ev->proto = f->proto;
	ev->family = f->family;
	ev->direction = dir;
	ev->match_type = v->match_type;
	ev->lpm_prefix = v->lpm_prefix;
	ev->flags = flags | (v->exact ? EV_F_EXACT : 0);
	ev->proxy_port = flags & EV_F_REDIRECTED ? bpf_ntohs(v->proxy_port) : 0;
	bpf_ringbuf_submit(ev, 0);
}

#define emit(skb, ...) emit_on(skb, (skb)->ifindex, __VA_ARGS__)

#endif
