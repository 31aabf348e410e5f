/* SPDX-License-Identifier: GPL-2.0 */
/* Packet parsing: the L3 and L4 headers are read once per packet into a struct flow (with the L4
 * offset), which every later step uses instead of reading the packet again. */
#ifndef CILIA_PARSE_H
#define CILIA_PARSE_H

#include "common.h"
#include "parse6.h"

static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, struct flow *f, int frag)
{
	__u8 buf[4];

	f->ct_create = 1;
	f->l4_off = off;
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
static __always_inline int parse_careful(struct __sk_buff *skb, struct flow *f)
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
		__u32 off = ETH_HLEN + 40;
		int frag = 0;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 6, b, 1) < 0)
			return -1;
		f->proto = b[0];
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 8, f->saddr, 16) < 0)
			return -1;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 24, f->daddr, 16) < 0)
			return -1;
		f->family = 6;
		if (ipv6_skip_exthdrs(skb, f, &off, &frag) < 0)
			return -1;
		return parse_l4(skb, off, f, frag) < 0 ? -1 : 1;
	}
	return 0;
}

/* The common case without helper calls: headers in the linear area, no IPv4 options. Returns
 * 1 parsed, 0 non-IP, -2 not handled here (the caller falls back to parse_careful()). */
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
		f->l4_off = ETH_HLEN + 20;
		l4 = p + ETH_HLEN + 20;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (data + ETH_HLEN + 40 + 16 > end || ipv6_is_exthdr(p[ETH_HLEN + 6]))
			return -2; /* extension headers or short: the careful path */
		f->proto = p[ETH_HLEN + 6];
		__builtin_memcpy(f->saddr, p + ETH_HLEN + 8, 16);
		__builtin_memcpy(f->daddr, p + ETH_HLEN + 24, 16);
		f->family = 6;
		f->l4_off = ETH_HLEN + 40;
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

/* 1 parsed, 0 non-IP, -1 malformed. */
static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	int r = parse_direct(skb, f);

	if (r == -2) {
		__builtin_memset(f, 0, sizeof(*f));
		r = parse_careful(skb, f);
	}
	return r;
}

/* IPv6 link control keeps the link working, like ARP for IPv4: neighbour discovery, and
 * interface/link-scope multicast (MLD reports, DAD), which is never routed off the link. */
static __always_inline int ipv6_link_control(const struct flow *f)
{
	return f->family == 6 && ((f->proto == IPPROTO_ICMPV6 && f->policy_port >= 133 && f->policy_port <= 137) ||
				  (f->daddr[0] == 0xff && (f->daddr[1] & 0x0f) <= 2));
}

#endif
