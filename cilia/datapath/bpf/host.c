// SPDX-License-Identifier: GPL-2.0
/* cilia's host firewall: the node's host endpoint (identity reserved:host) on the lab's devices.
 *
 * A program of its own (not datapath.c), attached as the first tcx program of each lab-facing
 * device of the node (pods' host veths, world hosts' veths, a cluster node's underlay), before the
 * pod datapath. It looks only at the node's own traffic:
 *
 *   host_ingress (tc ingress of the device): a packet arriving whose destination is one of the
 *       node's addresses (ipcache identity 1) = the host endpoint's INGRESS policy, remote = source.
 *   host_egress  (tc egress of the device):  a packet leaving whose source is one of the node's
 *       addresses = the host endpoint's EGRESS policy, remote = destination.
 *
 * Everything else (forwarded pod traffic, non-IP) continues to the next program unchanged (TCX_NEXT,
 * i.e. -1), as does an allowed host packet: the pod's own policy still applies after this one.
 * The host endpoint is the entry with key HOST_EP_IFINDEX (0: no device has it) of the pinned
 * endpoints map; no entry = host firewall off. Conntrack, the policy lookup, events and metrics are
 * the datapath's (shared pinned maps and headers), keyed by the host endpoint's id.
 */
#include "common.h"
#include "maps.h"
#include "parse.h"
#include "metrics.h"
#include "events.h"
#include "policy.h"
#include "conntrack.h"

#define HOST_EP_IFINDEX 0
#define HOST_ID 1
#define TCX_NEXT -1

static __always_inline int host_fw(struct __sk_buff *skb, const __u8 dir)
{
	__u32 key = HOST_EP_IFINDEX, zero = 0, base = dir * METRIC_DIR_STRIDE, remote, src, dst;
	__u32 old_flags = 0, enforced;
	struct endpoint_value *ep;
	struct config_value *cfg;
	struct verdict v = {};
	union ct_key_any ck;
	struct ct_value *ct;
	struct flow f = {};
	int r;

	ep = bpf_map_lookup_elem(&cilia_endpoints, &key);
	if (!ep)
		return TCX_NEXT; /* host firewall off */
	r = parse(skb, &f);
	if (r <= 0)
		return TCX_NEXT; /* non-IP; malformed IP is the pod datapath's (or the stack's) to drop */
	if (ipv6_link_control(&f))
		return TCX_NEXT;
	if (lookup_identity(&f, dir == DIR_INGRESS ? f.daddr : f.saddr) != HOST_ID)
		return TCX_NEXT; /* not the node's own traffic */
	cfg = bpf_map_lookup_elem(&cilia_config, &zero);
	if (!(ep->flags & EP_F_POLICY_READY)) {
		v.reason = DROP_POLICY;
		count(base + METRIC_DROP_NOT_READY, skb->len);
		emit(skb, cfg, ep->ep_id, 0, 0, dir, &f, &v, EV_F_NOT_READY);
		return TC_ACT_SHOT;
	}
	if (ct_reply(skb, cfg, ep->ep_id, dir, &f)) {
		count(base + METRIC_REPLY, skb->len);
		return TCX_NEXT;
	}
	remote = lookup_identity(&f, dir == DIR_INGRESS ? f.saddr : f.daddr);
	src = dir == DIR_INGRESS ? remote : HOST_ID;
	dst = dir == DIR_INGRESS ? HOST_ID : remote;
	enforced = ep->flags & (dir == DIR_EGRESS ? EP_F_ENFORCE_EGRESS : EP_F_ENFORCE_INGRESS);
	if (enforced)
		policy_lookup(ep->ep_id, remote, dir, &f, &v);
	if (v.reason) {
		if (!(ep->flags & EP_F_AUDIT)) {
			count(base + drop_slot(v.reason), skb->len);
			emit(skb, cfg, ep->ep_id, src, dst, dir, &f, &v, 0);
			return TC_ACT_SHOT;
		}
		count(base + METRIC_AUDITED, skb->len);
	} else {
		count(base + METRIC_FORWARDED, skb->len);
	}
	/* host policies have no L7 here: a proxy port in the entry is not followed (docs/differences.md).
	 * The connection is tracked in an unenforced direction too: its replies come back through the
	 * other direction, which may be enforced. */
	ct_key_of(&ck, ep->ep_id, dir, &f);
	ct = ct_forward(skb, cfg, &ck, &f, &v, 0, &old_flags);
	if (enforced && !ct && (f.proto != IPPROTO_TCP || f.ct_create || v.reason)) {
		v.proxy_port = 0;
		emit(skb, cfg, ep->ep_id, src, dst, dir, &f, &v, EV_F_ALLOWED | (v.reason ? EV_F_AUDITED : 0));
	}
	return TCX_NEXT;
}

SEC("tc")
int host_ingress(struct __sk_buff *skb)
{
	return host_fw(skb, DIR_INGRESS);
}

SEC("tc")
int host_egress(struct __sk_buff *skb)
{
	return host_fw(skb, DIR_EGRESS);
}

char _license[] SEC("license") = "GPL";
