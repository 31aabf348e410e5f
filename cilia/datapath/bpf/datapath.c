// SPDX-License-Identifier: GPL-2.0
/* cilia's tc datapath for pod veths (host side).
 *
 * from_container: tc ingress of the host veth = packets leaving the pod = the pod's EGRESS policy.
 * to_container:   tc egress of the host veth  = packets entering the pod = the pod's INGRESS policy.
 *
 * Per packet: endpoint by ifindex (unknown endpoint: drop, fail closed), parse IPv4/IPv6 and
 * TCP/UDP/SCTP/ICMP, conntrack (replies of allowed connections pass without policy), remote identity
 * from the ipcache (miss: world), then the policy lookup of semantics.md §5.5 (mirrored by
 * cilia/datapath/sim.py). Every forward packet is looked up, so a revoked rule cuts established
 * connections (§4.9); conntrack only exempts replies. Non-IP passes.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "cilia.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define IPPROTO_SCTP 132
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10
#define CT_CLOSE_TIMEOUT_S 10 /* after a FIN or RST, in either direction */
#define CT_SYN_TIMEOUT_S 60 /* TCP until the first reply: an unanswered SYN is forgotten soon */
#define CT_TCP_TIMEOUT_S 21600
#define WORLD_ID 2
#define NSEC 1000000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache4_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, CILIA_IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_ipcache4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache6_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, CILIA_IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_ipcache6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* ifindex */
	__type(value, struct endpoint_value);
	__uint(max_entries, CILIA_ENDPOINTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, CILIA_POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, CILIA_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, CILIA_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* endpoint id */
	__type(value, struct ratelimit_value);
	__uint(max_entries, CILIA_ENDPOINTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_evrl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metric_value);
	__uint(max_entries, CILIA_METRICS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct config_value);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_value);
	__uint(max_entries, CILIA_LB_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_lb4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_tuple);
	__type(value, struct lb4_addr);
	__uint(max_entries, CILIA_LB_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_lb4_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_tuple);
	__type(value, struct lb4_addr);
	__uint(max_entries, CILIA_LB_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_lb4_rev SEC(".maps");

/* DNS redirection to the agent's DNS proxy (toFQDNs): endpoint id -> proxy address, for the
 * endpoints whose egress policy has DNS rules; and the proxy-side tuple -> the DNS server the
 * query was sent to, so the proxy knows where to forward and the reply gets its source back. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_addr);
	__uint(max_entries, CILIA_ENDPOINTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_dns_redirect SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_tuple);
	__type(value, struct lb4_addr);
	__uint(max_entries, CILIA_LB_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_dns_rev SEC(".maps");

struct flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport; /* ICMP echo: the echo id, so request and reply are mirrored tuples */
	__be16 dport;
	__u16 policy_port; /* host order: destination port, or ICMP type */
	__u8 proto;
	__u8 family;
	__u8 tcp_flags;
	__u8 ct_create; /* may open a conntrack entry (TCP SYN, echo request, UDP/SCTP/other) */
};

struct verdict {
	__u32 cookie;
	__u16 reason; /* 0 = allowed */
	__u8 match_type;
	__u8 lpm_prefix;
	__u8 exact;
};

static __always_inline void count(__u32 idx, __u64 bytes)
{
	struct metric_value *m = bpf_map_lookup_elem(&cilia_metrics, &idx);

	if (m) {
		m->packets += 1;
		m->bytes += bytes;
	}
}

static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, struct flow *f, int frag)
{
	__u8 buf[4];

	f->ct_create = 1;
	if (frag)
		return 0; /* later fragments carry no L4 header: ports stay 0 */
	switch (f->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (bpf_skb_load_bytes(skb, off, &f->sport, 4) < 0)
			return -1;
		f->policy_port = bpf_ntohs(f->dport);
		if (f->proto == IPPROTO_TCP) {
			if (bpf_skb_load_bytes(skb, off + 13, &f->tcp_flags, 1) < 0)
				return -1;
			f->ct_create = (f->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
		}
		return 0;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (bpf_skb_load_bytes(skb, off, buf, 2) < 0)
			return -1;
		f->policy_port = buf[0];
		f->ct_create = 0;
		/* echo request/reply: 8/0 (v4), 128/129 (v6) */
		if ((f->proto == IPPROTO_ICMP && (buf[0] == 8 || buf[0] == 0)) ||
		    (f->proto == IPPROTO_ICMPV6 && (buf[0] == 128 || buf[0] == 129))) {
			if (bpf_skb_load_bytes(skb, off + 4, &f->sport, 2) < 0)
				return -1;
			f->dport = f->sport;
			f->ct_create = buf[0] == 8 || buf[0] == 128;
		}
		return 0;
	}
	return 0;
}

/* Returns 1 for an IP packet parsed into f, 0 for non-IP, -1 for a malformed packet. */
static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	__be16 proto;
	__u8 b[2];

	if (bpf_skb_load_bytes(skb, 12, &proto, 2) < 0)
		return 0;
	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 vihl;
		__be16 frag;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 6, &frag, 2) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 9, &f->proto, 1) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 12, f->saddr, 4) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 16, f->daddr, 4) < 0)
			return -1;
		f->family = 4;
		return parse_l4(skb, ETH_HLEN + (vihl & 0xf) * 4, f, (bpf_ntohs(frag) & 0x1fff) != 0) < 0 ? -1 : 1;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 6, b, 1) < 0)
			return -1;
		f->proto = b[0];
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 8, f->saddr, 16) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 24, f->daddr, 16) < 0)
			return -1;
		f->family = 6;
		return parse_l4(skb, ETH_HLEN + 40, f, 0) < 0 ? -1 : 1;
	}
	return 0;
}

/* The common case without helper calls: headers in the linear area, no IPv4 options. Returns
 * 1 parsed, 0 non-IP, -2 not handled here (the caller falls back to parse()). */
static __always_inline int parse_direct(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u8 *p = data, *l4;
	__be16 proto;

	if (data + ETH_HLEN > end)
		return -2;
	proto = *(__be16 *)(p + 12);
	if (proto == bpf_htons(ETH_P_IP)) {
		if (data + ETH_HLEN + 20 + 16 > end || p[ETH_HLEN] != 0x45 ||
		    (*(__be16 *)(p + ETH_HLEN + 6) & bpf_htons(0x3fff)))
			return -2; /* options, fragments or short: the careful path */
		f->proto = p[ETH_HLEN + 9];
		__builtin_memcpy(f->saddr, p + ETH_HLEN + 12, 4);
		__builtin_memcpy(f->daddr, p + ETH_HLEN + 16, 4);
		f->family = 4;
		l4 = p + ETH_HLEN + 20;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (data + ETH_HLEN + 40 + 16 > end)
			return -2;
		f->proto = p[ETH_HLEN + 6];
		__builtin_memcpy(f->saddr, p + ETH_HLEN + 8, 16);
		__builtin_memcpy(f->daddr, p + ETH_HLEN + 24, 16);
		f->family = 6;
		l4 = p + ETH_HLEN + 40;
	} else {
		return 0;
	}
	f->ct_create = 1;
	switch (f->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		__builtin_memcpy(&f->sport, l4, 4);
		f->policy_port = bpf_ntohs(f->dport);
		if (f->proto == IPPROTO_TCP) {
			f->tcp_flags = l4[13];
			f->ct_create = (f->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
		}
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		f->policy_port = l4[0];
		f->ct_create = 0;
		if ((f->proto == IPPROTO_ICMP && (l4[0] == 8 || l4[0] == 0)) ||
		    (f->proto == IPPROTO_ICMPV6 && (l4[0] == 128 || l4[0] == 129))) {
			__builtin_memcpy(&f->sport, l4 + 4, 2);
			f->dport = f->sport;
			f->ct_create = l4[0] == 8 || l4[0] == 128;
		}
		break;
	}
	return 1;
}

static __always_inline __u32 lookup_identity(struct flow *f, __u8 *addr)
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
	return v ? v->identity : WORLD_ID;
}

static __always_inline __u8 match_type(__u8 exact, __u8 prefix)
{
	if (exact)
		return prefix == 0 ? MATCH_L3_ONLY : (prefix > 8 ? MATCH_L3_L4 : MATCH_L3_PROTO);
	return prefix == 0 ? MATCH_ALL : (prefix > 8 ? MATCH_L4_ONLY : MATCH_PROTO_ONLY);
}

/* semantics.md §5.5: exact-identity LPM (a deny there drops), wildcard-identity LPM, then choose. */
static __always_inline void policy_lookup(__u32 ep_id, __u32 remote, __u8 dir, struct flow *f,
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
	v->match_type = match_type(v->exact, e->lpm_prefix);
}

static __always_inline void emit(struct __sk_buff *skb, __u32 ep_id, __u32 src_id, __u32 dst_id,
				 __u8 dir, struct flow *f, struct verdict *v, __u8 flags)
{
	__u32 zero = 0, limit = 1000;
	struct config_value *cfg = bpf_map_lookup_elem(&cilia_config, &zero);
	struct ratelimit_value *rl, fresh = {};
	__u64 now = bpf_ktime_get_ns();
	__u32 suppressed = 0;
	struct event *ev;

	if (cfg && cfg->events_per_sec)
		limit = cfg->events_per_sec;
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
	ev->ifindex = skb->ifindex;
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
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline __u32 drop_slot(__u16 reason)
{
	if (reason == DROP_POLICY_DENY)
		return METRIC_DROP_DENY;
	if (reason == DROP_POLICY_AUTH_REQUIRED)
		return METRIC_DROP_AUTH;
	return METRIC_DROP_POLICY;
}

/* a closing connection keeps its entry only briefly, so a reused tuple is not taken for a reply */
static __always_inline void ct_closing(struct ct_value *ct)
{
	__u64 close_at = bpf_ktime_get_ns() + CT_CLOSE_TIMEOUT_S * NSEC;

	ct->flags |= CT_F_CLOSING;
	if (ct->expires_ns > close_at)
		ct->expires_ns = close_at;
}

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

static __always_inline int l4_offset4(struct __sk_buff *skb)
{
	__u8 vihl;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1) < 0)
		return -1;
	return ETH_HLEN + (vihl & 0xf) * 4;
}

/* Service translation on the client's egress path: a packet to a ClusterIP:port gets a backend
 * (the connection's backend, or a random one for a new connection) before conntrack and policy,
 * so policy sees the backend (semantics.md §7). Returns 0 (translated or not a service), -1 drop
 * (a service without backends, or a failed rewrite). */
static __always_inline int lb4_dnat(struct __sk_buff *skb, struct flow *f)
{
	struct lb4_key sk = {.port = f->dport, .proto = f->proto};
	struct lb4_tuple t = {.sport = f->sport, .dport = f->dport, .proto = f->proto};
	struct lb4_value *svc, *be;
	struct lb4_addr chosen, front;
	struct lb4_addr *known;
	__be32 old_addr, new_addr;
	int l4_off;

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

	l4_off = l4_offset4(skb);
	if (l4_off < 0)
		return -1;
	__builtin_memcpy(&old_addr, f->daddr, 4);
	__builtin_memcpy(&new_addr, chosen.addr, 4);
	if (rewrite4(skb, l4_off, f->proto, ETH_HLEN + 16, l4_off + 2, old_addr, new_addr, f->dport,
		     chosen.port) < 0)
		return -1;
	__builtin_memcpy(f->daddr, chosen.addr, 4);
	f->dport = chosen.port;
	f->policy_port = bpf_ntohs(chosen.port);
	return 0;
}

/* A reply whose reversed tuple is in ``rev_map`` gets its source rewritten to the address and port
 * stored there: the ClusterIP:port of a service (cilia_lb4_rev) or the DNS server a redirected
 * query was sent to (cilia_dns_rev). Returns what the source became, NULL when nothing matched or
 * the rewrite failed. */
static __always_inline struct lb4_addr *revnat4(struct __sk_buff *skb, struct flow *f, void *rev_map)
{
	struct lb4_tuple k = {.sport = f->dport, .dport = f->sport, .proto = f->proto};
	struct lb4_addr *orig;
	__be32 old_addr, new_addr;
	int l4_off;

	if (f->family != 4 || (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP))
		return NULL;
	__builtin_memcpy(k.saddr, f->daddr, 4);
	__builtin_memcpy(k.daddr, f->saddr, 4);
	orig = bpf_map_lookup_elem(rev_map, &k);
	if (!orig)
		return NULL;
	l4_off = l4_offset4(skb);
	if (l4_off < 0)
		return NULL;
	__builtin_memcpy(&old_addr, f->saddr, 4);
	__builtin_memcpy(&new_addr, orig->addr, 4);
	if (rewrite4(skb, l4_off, f->proto, ETH_HLEN + 12, l4_off, old_addr, new_addr, f->sport,
		     orig->port) < 0)
		return NULL;
	return orig;
}

/* A reply from a service backend to its client gets the ClusterIP:port back as its source
 * (called on conntrack replies only: a translated connection's reply is one). */
static __always_inline void lb4_revnat(struct __sk_buff *skb, struct flow *f)
{
	revnat4(skb, f, &cilia_lb4_rev);
}

/* An allowed DNS query (UDP or TCP port 53) of an endpoint with DNS rules goes to the DNS proxy
 * instead; the proxy forwards it to the server it was sent to (policy was decided on that server).
 * Every packet of a TCP connection is redirected, so the proxy's TCP stack sees the whole stream. */
static __always_inline void dns_redirect(struct __sk_buff *skb, __u32 ep_id, struct flow *f)
{
	struct lb4_tuple t = {.sport = f->sport, .proto = f->proto};
	struct lb4_addr *proxy, server = {.port = f->dport};
	__be32 old_addr, new_addr;
	int l4_off;

	if (f->family != 4 || (f->proto != IPPROTO_UDP && f->proto != IPPROTO_TCP) ||
	    f->dport != bpf_htons(53))
		return;
	proxy = bpf_map_lookup_elem(&cilia_dns_redirect, &ep_id);
	if (!proxy)
		return;
	l4_off = l4_offset4(skb);
	if (l4_off < 0)
		return;
	__builtin_memcpy(server.addr, f->daddr, 4);
	__builtin_memcpy(t.saddr, f->saddr, 4);
	__builtin_memcpy(t.daddr, proxy->addr, 4);
	t.dport = proxy->port;
	bpf_map_update_elem(&cilia_dns_rev, &t, &server, BPF_ANY);
	__builtin_memcpy(&old_addr, f->daddr, 4);
	__builtin_memcpy(&new_addr, proxy->addr, 4);
	rewrite4(skb, l4_off, f->proto, ETH_HLEN + 16, l4_off + 2, old_addr, new_addr, f->dport,
		 proxy->port);
}

/* The proxy's answer gets the DNS server's address and port back as its source, before conntrack
 * sees it (the connection was recorded towards the server). */
static __always_inline void dns_revnat(struct __sk_buff *skb, struct flow *f)
{
	struct lb4_addr *server = revnat4(skb, f, &cilia_dns_rev);

	if (!server)
		return;
	__builtin_memcpy(f->saddr, server->addr, 4);
	f->sport = server->port;
}

static __always_inline int handle(struct __sk_buff *skb, const __u8 dir)
{
	__u32 ifindex = skb->ifindex, base = dir * METRIC_DIR_STRIDE, remote, ep_src, ep_dst;
	struct flow f = {};
	struct verdict v = {};
	struct endpoint_value *ep;
	struct ct_key ck = {};
	struct ct_value *ct;
	__u32 zero = 0;
	__u64 timeout;
	int r;

	r = parse_direct(skb, &f);
	if (r == -2) {
		__builtin_memset(&f, 0, sizeof(f));
		r = parse(skb, &f);
	}
	if (r == 0)
		return TC_ACT_OK; /* ARP and other non-IP */
	ep = bpf_map_lookup_elem(&cilia_endpoints, &ifindex);
	if (!ep) {
		v.reason = DROP_POLICY;
		count(base + METRIC_DROP_NO_ENDPOINT, skb->len);
		emit(skb, 0, 0, 0, dir, &f, &v, EV_F_NO_ENDPOINT);
		return TC_ACT_SHOT;
	}
	if (r < 0 || !(ep->flags & EP_F_POLICY_READY)) {
		v.reason = DROP_POLICY;
		count(base + METRIC_DROP_NOT_READY, skb->len);
		emit(skb, ep->ep_id, 0, 0, dir, &f, &v, EV_F_NOT_READY);
		return TC_ACT_SHOT;
	}
	/* IPv6 link control keeps the link working, like ARP for IPv4: neighbour discovery, and
	 * interface/link-scope multicast (MLD reports, DAD), which is never routed off the link */
	if (f.family == 6 && ((f.proto == IPPROTO_ICMPV6 && f.policy_port >= 133 && f.policy_port <= 137) ||
			      (f.daddr[0] == 0xff && (f.daddr[1] & 0x0f) <= 2)))
		return TC_ACT_OK;

	if (dir == DIR_EGRESS && lb4_dnat(skb, &f) < 0) {
		v.reason = DROP_POLICY;
		count(base + METRIC_DROP_POLICY, skb->len);
		return TC_ACT_SHOT;
	}

	if (dir == DIR_INGRESS)
		dns_revnat(skb, &f);

	ck.ep_id = ep->ep_id;
	ck.direction = dir;
	ck.proto = f.proto;
	ck.family = f.family;
	/* reply of a connection this endpoint's policy allowed in this direction: the reverse tuple */
	__builtin_memcpy(ck.saddr, f.daddr, 16);
	__builtin_memcpy(ck.daddr, f.saddr, 16);
	ck.sport = f.dport;
	ck.dport = f.sport;
	ck.direction = !dir;
	ct = bpf_map_lookup_elem(&cilia_ct, &ck);
	if (ct && ct->expires_ns > bpf_ktime_get_ns()) {
		ct->packets += 1;
		ct->bytes += skb->len;
		if (f.proto == IPPROTO_TCP && !(ct->flags & (CT_F_REPLIED | CT_F_CLOSING))) {
			/* the first reply: the connection is open, it gets the full lifetime */
			struct config_value *cfg = bpf_map_lookup_elem(&cilia_config, &zero);
			__u64 life = cfg && cfg->ct_tcp_timeout_s ? cfg->ct_tcp_timeout_s : CT_TCP_TIMEOUT_S;

			ct->flags |= CT_F_REPLIED;
			ct->expires_ns = bpf_ktime_get_ns() + life * NSEC;
		}
		if (f.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
			ct_closing(ct);
		count(base + METRIC_REPLY, skb->len);
		if (dir == DIR_INGRESS)
			lb4_revnat(skb, &f);
		return TC_ACT_OK;
	}

	if (dir == DIR_EGRESS) {
		remote = lookup_identity(&f, f.daddr);
		ep_src = ep->identity;
		ep_dst = remote;
	} else {
		remote = lookup_identity(&f, f.saddr);
		ep_src = remote;
		ep_dst = ep->identity;
	}
	if (!(ep->flags & (dir == DIR_EGRESS ? EP_F_ENFORCE_EGRESS : EP_F_ENFORCE_INGRESS))) {
		count(base + METRIC_FORWARDED, skb->len);
		return TC_ACT_OK;
	}
	policy_lookup(ep->ep_id, remote, dir, &f, &v);
	if (v.reason) {
		if (!(ep->flags & EP_F_AUDIT)) {
			count(base + drop_slot(v.reason), skb->len);
			emit(skb, ep->ep_id, ep_src, ep_dst, dir, &f, &v, 0);
			return TC_ACT_SHOT;
		}
		count(base + METRIC_AUDITED, skb->len);
	} else {
		count(base + METRIC_FORWARDED, skb->len);
	}

	/* forward packet allowed: refresh or open the conntrack entry (TCP only on a pure SYN, so a
	 * flushed connection cannot be resurrected by a mid-stream packet) */
	__builtin_memcpy(ck.saddr, f.saddr, 16);
	__builtin_memcpy(ck.daddr, f.daddr, 16);
	ck.sport = f.sport;
	ck.dport = f.dport;
	ck.direction = dir;
	{
		struct config_value *cfg = bpf_map_lookup_elem(&cilia_config, &zero);
		__u64 now = bpf_ktime_get_ns();

		timeout = f.proto == IPPROTO_TCP ? CT_TCP_TIMEOUT_S : 60;
		if (cfg && f.proto == IPPROTO_TCP && cfg->ct_tcp_timeout_s)
			timeout = cfg->ct_tcp_timeout_s;
		if (cfg && f.proto != IPPROTO_TCP && cfg->ct_timeout_s)
			timeout = cfg->ct_timeout_s;
		ct = bpf_map_lookup_elem(&cilia_ct, &ck);
		if (ct && ct->expires_ns > now) {
			if (f.proto == IPPROTO_TCP && f.ct_create)
				ct->flags = 0; /* a new SYN on the tuple: a new connection */
			/* until the peer answers, a TCP entry lives only as long as an opening may take */
			if (f.proto == IPPROTO_TCP && !(ct->flags & CT_F_REPLIED) && timeout > CT_SYN_TIMEOUT_S)
				timeout = CT_SYN_TIMEOUT_S;
			if (!(ct->flags & CT_F_CLOSING))
				ct->expires_ns = now + timeout * NSEC;
			if (f.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST))
				ct_closing(ct);
			ct->packets += 1;
			ct->bytes += skb->len;
			if (dir == DIR_EGRESS)
				dns_redirect(skb, ep->ep_id, &f);
			return TC_ACT_OK;
		}
		if (f.ct_create) {
			if (f.proto == IPPROTO_TCP && timeout > CT_SYN_TIMEOUT_S)
				timeout = CT_SYN_TIMEOUT_S;
			struct ct_value nv = {
				.expires_ns = now + timeout * NSEC,
				.packets = 1,
				.bytes = skb->len,
				.cookie = v.cookie,
			};

			bpf_map_update_elem(&cilia_ct, &ck, &nv, BPF_ANY);
		}
	}
	/* policy verdict event for a new connection or an audited drop (not for mid-stream TCP
	 * packets of a connection whose entry was flushed: one event per packet would flood) */
	if (f.proto != IPPROTO_TCP || f.ct_create || v.reason)
		emit(skb, ep->ep_id, ep_src, ep_dst, dir, &f, &v,
		     EV_F_ALLOWED | (v.reason ? EV_F_AUDITED : 0));
	if (dir == DIR_EGRESS)
		dns_redirect(skb, ep->ep_id, &f);
	return TC_ACT_OK;
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}

char _license[] SEC("license") = "GPL";
