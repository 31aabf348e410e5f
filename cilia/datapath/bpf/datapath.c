// SPDX-License-Identifier: GPL-2.0
/* cilia's tc datapath for pod veths (host side): one entry function per attach point.
 *
 * from_container: tc ingress of the host veth = packets leaving the pod = the pod's EGRESS policy.
 * to_container:   tc egress of the host veth  = packets entering the pod = the pod's INGRESS policy.
 *
 * Per packet: headers parsed once (parse.h), endpoint by ifindex (unknown endpoint: drop, fail
 * closed) and the config map read once, conntrack (replies of allowed connections pass without
 * policy, conntrack.h), remote identity from the ipcache (miss: world), then the policy lookup of
 * semantics.md §5.5 (policy.h, mirrored by cilia/datapath/sim.py). Every forward packet is looked
 * up, so a revoked rule cuts established connections (§4.9); conntrack only exempts replies.
 * A policy entry with a proxy port sends the connection to the node's transparent proxy
 * listener (proxy.h). Non-IP passes; a packet from or to an address outside the lab is dropped first (guard.h).
 * Services (lb.h) and the DNS proxy redirect (proxy.h) rewrite addresses around it.
 *
 * eBPF host routing (CFG_F_HOST_ROUTING, as Cilium's): from_container also decides the ingress of a
 * destination endpoint on this node and hands the packet to its namespace with bpf_redirect_peer,
 * skipping the host's IP stack and the destination's to_container (see host_route below). With
 * CFG_F_ROUTE_OUT a packet routed out of a guard-only lab device (a world host's veth, a cluster
 * node's underlay) goes there by bpf_redirect_neigh, whose egress program (the guard) still runs.
 */
#include "common.h"
#include "maps.h"
#include "parse.h"
#include "metrics.h"
#include "events.h"
#include "policy.h"
#include "conntrack.h"
#include "lb.h"
#include "proxy.h"
#include "guard.h"

#define CONTINUE -1
#define STACK_PATH -2 /* host routing: this packet needs the host's stack (a proxy, a rewrite) */
#define GUARD_EP_MIN 0xFF00 /* guard-only devices (world hosts, a node's underlay): never host-routed */
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

static __always_inline int drop_outside_lab(struct __sk_buff *skb, struct pkt *p, const __u8 dir)
{
	struct verdict v = {.reason = DROP_OUTSIDE_LAB};

	count(METRIC_EXT_BASE + dir * METRIC_DIR_STRIDE + METRIC_X_DROP_OUTSIDE_LAB, skb->len);
	/* the peer is world: outside the lab's ranges nothing has another identity */
	emit(skb, p->cfg, p->ep->ep_id, dir == DIR_EGRESS ? p->ep->identity : WORLD_ID,
	     dir == DIR_EGRESS ? WORLD_ID : p->ep->identity, dir, &p->f, &v, 0);
	return TC_ACT_SHOT;
}

/* Whether the service maps may hold a frontend: a node without Services skips their lookups, two
 * cold hash buckets per packet (no config: look them up). */
static __always_inline int services_on(const struct config_value *cfg)
{
	return !cfg || (cfg->flags & CFG_F_SERVICES);
}

/* Parse, find the endpoint and the config: a verdict (TC_ACT_*) for packets that stop here, else
 * CONTINUE with p filled. */
static __always_inline int prologue(struct __sk_buff *skb, struct pkt *p, const __u8 dir)
{
	__u32 ifindex = skb->ifindex, base = dir * METRIC_DIR_STRIDE, zero = 0;
	struct verdict v = {};
	int r;

	r = parse(skb, &p->f);
	if (r == 0)
		return TC_ACT_OK; /* ARP and other non-IP */
	/* like ARP, also before the endpoint is known or ready: a link's first MLD report or
	 * neighbour solicitation would otherwise be a policy drop that no policy decided */
	if (r > 0 && ipv6_link_control(&p->f))
		return TC_ACT_OK;
	p->cfg = bpf_map_lookup_elem(&cilia_config, &zero);
	p->ep = bpf_map_lookup_elem(&cilia_endpoints, &ifindex);
	if (!p->ep) {
		v.reason = DROP_POLICY;
		count(base + METRIC_DROP_NO_ENDPOINT, skb->len);
		emit(skb, p->cfg, 0, 0, 0, dir, &p->f, &v, EV_F_NO_ENDPOINT);
		return TC_ACT_SHOT;
	}
	if (r < 0 || !(p->ep->flags & EP_F_POLICY_READY)) {
		v.reason = DROP_POLICY;
		count(base + METRIC_DROP_NOT_READY, skb->len);
		emit(skb, p->cfg, p->ep->ep_id, 0, 0, dir, &p->f, &v, EV_F_NOT_READY);
		return TC_ACT_SHOT;
	}
	if (outside_lab(&p->f))
		return drop_outside_lab(skb, p, dir);
	return CONTINUE;
}

/* The connection goes to the local proxy on proxy_port: assigned here on tc ingress (the pod's
 * egress), hairpinned to the device's ingress on tc egress (the pod's ingress). */
static __always_inline int redirect(struct __sk_buff *skb, struct pkt *p, const __u8 dir, __be16 proxy_port,
				    __u32 src_id, __u32 dst_id)
{
	struct verdict v = {.reason = DROP_PROXY_LOOKUP_FAILED};

	if (dir == DIR_INGRESS) {
		count(METRIC_EXT_BASE + DIR_INGRESS * METRIC_DIR_STRIDE + METRIC_X_REDIRECTED, skb->len);
		return proxy_hairpin(skb, bpf_ntohs(proxy_port));
	}
	if (proxy_assign(skb, &p->f, proxy_port) == 0) {
		count(METRIC_EXT_BASE + DIR_EGRESS * METRIC_DIR_STRIDE + METRIC_X_REDIRECTED, skb->len);
		return TC_ACT_OK;
	}
	count(METRIC_EXT_BASE + DIR_EGRESS * METRIC_DIR_STRIDE + METRIC_X_DROP_PROXY, skb->len);
	emit(skb, p->cfg, p->ep->ep_id, src_id, dst_id, DIR_EGRESS, &p->f, &v, 0);
	return TC_ACT_SHOT;
}

/* A packet to_container hairpinned for the endpoint's ingress proxy (CILIA_MARK_HAIRPIN | port):
 * assign it to the proxy, or drop it when nothing listens there. */
static __always_inline int to_proxy_hairpinned(struct __sk_buff *skb, struct pkt *p)
{
	__u16 port = skb->mark >> 16;
	struct verdict v = {.reason = DROP_PROXY_LOOKUP_FAILED};

	if (proxy_assign(skb, &p->f, bpf_htons(port)) == 0)
		return TC_ACT_OK;
	count(METRIC_EXT_BASE + DIR_INGRESS * METRIC_DIR_STRIDE + METRIC_X_DROP_PROXY, skb->len);
	emit(skb, p->cfg, p->ep->ep_id, lookup_identity(&p->f, p->f.saddr), p->ep->identity, DIR_INGRESS, &p->f,
	     &v, 0);
	return TC_ACT_SHOT;
}

/* The proxy port an allowed forward packet goes to (network order, 0 = none): the policy's, except
 * for an ingress proxy's own onward connection (CILIA_MARK_PROXY_INGRESS) and for the DNS proxy's
 * port-53 path (endpoints in cilia_dns_redirect keep it). */
static __always_inline __be16 proxy_port_of(struct __sk_buff *skb, __u32 ep_id, const __u8 dir,
					    const struct flow *f, const struct verdict *v)
{
	if (!v->proxy_port)
		return 0;
	asm volatile("" : "+r"(skb)); /* a fresh ctx pointer: see proxy_assign (proxy.h) */
	if (dir == DIR_INGRESS && (skb->mark & CILIA_MARK_MASK) == CILIA_MARK_PROXY_INGRESS)
		return 0;
	/* IPv4 DNS takes dns_redirect's rewriting path; IPv6 DNS (which it does not rewrite) keeps the
	 * proxy port, finds no listener and is dropped: DNS rules are never bypassed over IPv6 */
	if (dir == DIR_EGRESS && f->dport == bpf_htons(53) && f->family == 4 &&
	    bpf_map_lookup_elem(&cilia_dns_redirect, &ep_id))
		return 0;
	return v->proxy_port;
}

/* Whether dns_redirect will rewrite this (allowed, egress) packet towards the DNS proxy. */
static __always_inline int dns_redirected(__u32 ep_id, const struct flow *f)
{
	return f->family == 4 && (f->proto == IPPROTO_UDP || f->proto == IPPROTO_TCP) &&
	       f->dport == bpf_htons(53) && bpf_map_lookup_elem(&cilia_dns_redirect, &ep_id);
}

/* Conntrack and policy for one direction of an endpoint (dir is a constant in each entry).
 * hr: the destination's ingress decided in the source's program (host routing): a packet that
 * would go to a proxy returns STACK_PATH before any side effect, so to_container decides it as
 * always. *stack is set when the packet was handed to a proxy or rewritten for one. */
static __always_inline int enforce(struct __sk_buff *skb, struct pkt *p, const __u8 dir, const int hr,
				   __u32 ifindex, int *stack, __u64 now)
{
	__u32 base = dir * METRIC_DIR_STRIDE, remote, ep_src, ep_dst, ct_flags = 0, old_flags = 0;
	struct endpoint_value *ep = p->ep;
	struct flow *f = &p->f;
	struct verdict v = {};
	union ct_key_any ck;
	struct ct_value *ct, *known;
	__be16 proxy;
	int local;

	ct = ct_reply_at(skb, p->cfg, ep->ep_id, dir, f, now);
	if (ct) {
		count(base + METRIC_REPLY, skb->len);
		if (dir == DIR_INGRESS && services_on(p->cfg))
			lb_revnat(skb, f);
		/* a reply to a connection a socket of the node opened (a proxy's onward connection,
		 * with the client's address as its source) goes to that socket, not on to the client;
		 * without a socket (closed, in TIME_WAIT) the stack decides as for any packet */
		if (dir == DIR_EGRESS && (ct->flags & CT_F_PROXY_PEER)) {
			proxy_assign(skb, f, 0);
			*stack = 1;
		}
		return TC_ACT_OK;
	}

	if (dir == DIR_EGRESS) {
		remote = lookup_identity(f, f->daddr);
		ep_src = ep->identity;
		ep_dst = remote;
	} else {
		remote = lookup_identity(f, f->saddr);
		ep_src = remote;
		ep_dst = ep->identity;
	}
	if (!(ep->flags & (dir == DIR_EGRESS ? EP_F_ENFORCE_EGRESS : EP_F_ENFORCE_INGRESS))) {
		count(base + METRIC_FORWARDED, skb->len);
		return TC_ACT_OK;
	}
	policy_lookup(ep->ep_id, remote, dir, f, &v);
	ct_key_of(&ck, ep->ep_id, dir, f);
	known = ct_lookup(&ck, f->family); /* the connection's entry, if any (one hash per side) */
	if (hr) {
		if (proxy_port_of(skb, ep->ep_id, dir, f, &v))
			return STACK_PATH;
		if (known && (known->flags & CT_F_PROXY_REDIRECT))
			return STACK_PATH; /* a connection that stays with its proxy */
	}
	if (v.reason) {
		if (!(ep->flags & EP_F_AUDIT)) {
			count(base + drop_slot(v.reason), skb->len);
			emit_on(skb, ifindex, p->cfg, ep->ep_id, ep_src, ep_dst, dir, f, &v, 0);
			return TC_ACT_SHOT;
		}
		count(base + METRIC_AUDITED, skb->len);
	}

	proxy = proxy_port_of(skb, ep->ep_id, dir, f, &v);
	local = !hr && dir == DIR_INGRESS && skb->sk; /* sent by a socket of the node, not forwarded */
	if (proxy)
		ct_flags = CT_F_PROXY_REDIRECT | ((__u32)bpf_ntohs(proxy) << CT_PROXY_PORT_SHIFT);
	if (local)
		ct_flags |= CT_F_PROXY_PEER;
	ct = ct_forward_known(skb, p->cfg, &ck, known, f, &v, ct_flags, &old_flags, now);
	if (ct && local && ((old_flags & CT_F_PROXY_ONWARD) ||
			    (old_flags & (CT_F_PROXY_REDIRECT | CT_F_PROXY_PEER)) == CT_F_PROXY_REDIRECT)) {
		/* the ingress proxy connecting on with the client's own address and port (the tuple
		 * of the connection it took over): the policy decided it, it is not sent back */
		ct->flags |= CT_F_PROXY_ONWARD | CT_F_PROXY_PEER;
		proxy = 0;
	} else if (ct) {
		/* a redirected connection stays with its proxy (which holds its client side) */
		if (!proxy && (ct->flags & CT_F_PROXY_REDIRECT))
			proxy = bpf_htons(ct->flags >> CT_PROXY_PORT_SHIFT);
	}
	/* forwarded, or counted as redirected (to the proxy) by redirect() */
	if (!v.reason && !proxy)
		count(base + METRIC_FORWARDED, skb->len);
	if (proxy || (dir == DIR_EGRESS && dns_redirected(ep->ep_id, f)))
		*stack = 1;
	if (ct) {
		if (proxy)
			return redirect(skb, p, dir, proxy, ep_src, ep_dst);
		if (dir == DIR_EGRESS)
			dns_redirect(skb, ep->ep_id, f);
		return TC_ACT_OK;
	}
	/* policy verdict event for a new connection or an audited drop (not for mid-stream TCP
	 * packets of a connection whose entry was flushed: one event per packet would flood) */
	if (f->proto != IPPROTO_TCP || f->ct_create || v.reason) {
		v.proxy_port = proxy;
		emit_on(skb, ifindex, p->cfg, ep->ep_id, ep_src, ep_dst, dir, f, &v,
			EV_F_ALLOWED | (v.reason ? EV_F_AUDITED : 0) | (proxy ? EV_F_REDIRECTED : 0));
	}
	if (proxy)
		return redirect(skb, p, dir, proxy, ep_src, ep_dst);
	if (dir == DIR_EGRESS)
		dns_redirect(skb, ep->ep_id, f);
	return TC_ACT_OK;
}

#define HOP_PEER 1 /* a ready pod endpoint of this node, its neighbour resolved */
#define HOP_OUT 2 /* a guard-only lab device: a world host or the underlay to another node */

/* Where a packet is routed, by the host's own routing table (the lab's /32 or /128 route per pod
 * and the neighbour entry of its eth0), never by anything the pod sent: HOP_PEER with the device,
 * the next hop's MACs and the endpoint filled; HOP_OUT with the device and the next hop's address;
 * 0 for anything else (a device that is not the lab's, an endpoint not ready, no route). */
static __always_inline int hop_lookup(struct __sk_buff *skb, const struct flow *f, struct bpf_fib_lookup *fib,
				      struct endpoint_value **ep)
{
	__u32 ifindex;
	long r;

	fib->ifindex = skb->ifindex;
	if (f->family == 4) {
		fib->family = AF_INET;
		__builtin_memcpy(&fib->ipv4_src, f->saddr, 4);
		__builtin_memcpy(&fib->ipv4_dst, f->daddr, 4);
	} else {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_src, f->saddr, 16);
		__builtin_memcpy(fib->ipv6_dst, f->daddr, 16);
	}
	r = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (r != BPF_FIB_LKUP_RET_SUCCESS && r != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	ifindex = fib->ifindex;
	if (ifindex == skb->ifindex)
		return 0;
	*ep = bpf_map_lookup_elem(&cilia_endpoints, &ifindex);
	if (!*ep || !((*ep)->flags & EP_F_POLICY_READY))
		return 0; /* not a lab device with the datapath on it: the stack (and the lab's guard) decide */
	if ((*ep)->ep_id >= GUARD_EP_MIN)
		return HOP_OUT;
	return r == BPF_FIB_LKUP_RET_SUCCESS ? HOP_PEER : 0;
}

/* TTL or hop limit - 1 as a router does: 0, or TC_ACT_OK when it runs out (the stack answers with
 * ICMP time exceeded), or TC_ACT_SHOT when the packet could not be rewritten. */
static __always_inline int hop_ttl(struct __sk_buff *skb, const struct flow *f)
{
	__be16 old, new;
	__u8 *b = (__u8 *)&new, hop;

	if (f->family == 6) { /* the hop limit; IPv6 has no header checksum */
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 7, &hop, 1) < 0 || hop <= 1)
			return TC_ACT_OK;
		hop -= 1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN + 7, &hop, 1, 0) < 0)
			return TC_ACT_SHOT;
		return 0;
	}
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 8, &old, 2) < 0)
		return TC_ACT_OK;
	new = old;
	if (b[0] <= 1)
		return TC_ACT_OK;
	b[0] -= 1;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, old, new, 2) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + 8, &new, 2, 0) < 0)
		return TC_ACT_SHOT; /* half rewritten: not forwarded in an undefined state */
	return 0;
}

/* Out of a guard-only device towards the next hop the fib lookup named: the kernel resolves its
 * neighbour (and fills the MACs) as the stack's output would, then the device's egress programs
 * run (the guard, the host firewall) before it transmits. */
static __always_inline int hop_out(struct __sk_buff *skb, const struct flow *f, const struct bpf_fib_lookup *fib)
{
	struct bpf_redir_neigh nh = {};
	int r = hop_ttl(skb, f);

	if (r)
		return r;
	if (f->family == 6) {
		nh.nh_family = AF_INET6;
		__builtin_memcpy(nh.ipv6_nh, fib->ipv6_dst, 16);
	} else {
		nh.nh_family = AF_INET;
		nh.ipv4_nh = fib->ipv4_dst;
	}
	return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
}

/* Forward as the host's stack would (the next hop's MACs, TTL or hop limit - 1), into the peer's
 * namespace; TC_ACT_OK (the stack path) when the TTL runs out. macs: destination then source. */
static __always_inline int hop_redirect(struct __sk_buff *skb, const struct flow *f, __u32 ifindex,
					const __u8 *macs)
{
	int r = hop_ttl(skb, f);

	if (r)
		return r;
	if (bpf_skb_store_bytes(skb, 0, macs, 12, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect_peer(ifindex, 0);
}

/* The destination as the agent registered it in cilia_lxc (an endpoint of this node by address,
 * as Cilium's lxc map): the entry, with *ep its device's endpoint, when that device still belongs
 * to the endpoint the entry was written for and it is a ready pod endpoint; NULL otherwise (no
 * entry, a stale one, a guard-only device, the packet's own device), and the fib lookup decides. */
static __always_inline const struct lxc_value *local_peer(struct __sk_buff *skb, const struct flow *f,
							   struct endpoint_value **ep)
{
	struct lxc_key k = {.family = f->family};
	const struct lxc_value *lxc;
	__u32 ifindex;

	__builtin_memcpy(k.addr, f->daddr, 16); /* IPv4: 4 bytes, then the zeros struct flow holds */
	lxc = bpf_map_lookup_elem(&cilia_lxc, &k);
	if (!lxc)
		return NULL;
	ifindex = lxc->ifindex;
	if (ifindex == skb->ifindex)
		return NULL;
	*ep = bpf_map_lookup_elem(&cilia_endpoints, &ifindex);
	if (!*ep || (*ep)->ep_id != lxc->ep_id || (*ep)->ep_id >= GUARD_EP_MIN ||
	    !((*ep)->flags & EP_F_POLICY_READY))
		return NULL;
	return lxc;
}

/* eBPF host routing of a packet the source's egress allowed: when it goes to an endpoint of this
 * node, the destination's ingress (conntrack, policy, events, metrics, audit) is decided here, as
 * its to_container would, and an allowed packet goes straight into its namespace. The destination
 * comes from cilia_lxc (no fib lookup); an address not there takes the fib lookup (world hosts,
 * other nodes, an endpoint the agent has not registered). Whatever needs the host (a proxy on
 * either side, the DNS proxy, a service, an endpoint not ready) takes the stack path, where
 * to_container decides it. IPv4 and IPv6 alike. */
static __always_inline int host_route(struct __sk_buff *skb, struct pkt *p, __u64 now)
{
	struct bpf_fib_lookup fib = {};
	struct endpoint_value *dst = NULL;
	const struct lxc_value *lxc;
	const __u8 *macs;
	__u8 fib_macs[12]; /* destination then source, as on the wire: one store */
	struct pkt q;
	__u32 ifindex;
	int stack = 0, r, hop;

	if (p->ep->ep_id >= GUARD_EP_MIN)
		return TC_ACT_OK;
	lxc = local_peer(skb, &p->f, &dst);
	if (lxc) {
		ifindex = lxc->ifindex;
		macs = lxc->macs;
	} else {
		dst = NULL;
		hop = hop_lookup(skb, &p->f, &fib, &dst);
		if (hop == HOP_OUT && p->cfg && (p->cfg->flags & CFG_F_ROUTE_OUT))
			return hop_out(skb, &p->f, &fib);
		if (hop != HOP_PEER || !dst)
			return TC_ACT_OK;
		ifindex = fib.ifindex;
		__builtin_memcpy(fib_macs, fib.dmac, 6);
		__builtin_memcpy(fib_macs + 6, fib.smac, 6);
		macs = fib_macs;
	}
	q.f = p->f;
	q.cfg = p->cfg;
	q.ep = dst;
	r = enforce(skb, &q, DIR_INGRESS, 1, ifindex, &stack, now);
	if (r == STACK_PATH)
		return TC_ACT_OK;
	if (r != TC_ACT_OK || stack)
		return r;
	return hop_redirect(skb, &p->f, ifindex, macs);
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	struct pkt p = {};
	int r = prologue(skb, &p, DIR_EGRESS), stack = 0, translated;
	__u64 now;

	if (r != CONTINUE)
		return r;
	if ((skb->mark & CILIA_MARK_MASK) == CILIA_MARK_HAIRPIN)
		return to_proxy_hairpinned(skb, &p);
	translated = services_on(p.cfg) ? lb_dnat(skb, &p.f) : 0;
	if (translated < 0) {
		count(DIR_EGRESS * METRIC_DIR_STRIDE + METRIC_DROP_POLICY, skb->len);
		return TC_ACT_SHOT;
	}
	if (!in_lab(&p.f, p.f.daddr)) /* a service backend outside the lab */
		return drop_outside_lab(skb, &p, DIR_EGRESS);
	now = bpf_ktime_get_ns(); /* one clock read for both sides' conntrack */
	r = enforce(skb, &p, DIR_EGRESS, 0, skb->ifindex, &stack, now);
	if (r != TC_ACT_OK || stack || !p.cfg || !(p.cfg->flags & CFG_F_HOST_ROUTING))
		return r;
	if (translated)
		return r; /* a service: translated connections keep the stack path */
	return host_route(skb, &p, now);
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	struct pkt p = {};
	int r = prologue(skb, &p, DIR_INGRESS), stack = 0;

	if (r != CONTINUE)
		return r;
	dns_revnat(skb, &p.f);
	return enforce(skb, &p, DIR_INGRESS, 0, skb->ifindex, &stack, bpf_ktime_get_ns());
}

char _license[] SEC("license") = "GPL";
