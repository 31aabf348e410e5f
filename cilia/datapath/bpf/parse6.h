/* SPDX-License-Identifier: GPL-2.0 */
/* IPv6 extension headers: the careful parser walks them to the upper-layer protocol, so a
 * packet with a hop-by-hop, routing, destination-options, fragment or AH header is decided on
 * its real protocol and ports, as Cilium's ipv6_hdrlen() does. The fast path (parse_direct)
 * leaves such packets to the careful one, so a plain IPv4 or IPv6 packet costs nothing here. */
#ifndef CILIA_PARSE6_H
#define CILIA_PARSE6_H

#include "common.h"

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define IPV6_MAX_EXTHDRS 4 /* more than this is refused (malformed), as Cilium does */

static __always_inline int ipv6_is_exthdr(__u8 nh)
{
	return nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_FRAGMENT || nh == NEXTHDR_AUTH ||
	       nh == NEXTHDR_DEST;
}

/* Walk the extension headers from *off (f->proto is the IPv6 header's next header): f->proto
 * becomes the upper-layer protocol, *off its offset, *frag 1 for a fragment that is not the
 * first (no L4 header). 0 on success, -1 for a malformed or too long chain. */
static __always_inline int ipv6_skip_exthdrs(struct __sk_buff *skb, struct flow *f, __u32 *off, int *frag)
{
	__u8 h[4];

#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXTHDRS; i++) {
		if (!ipv6_is_exthdr(f->proto))
			return 0;
		if (bpf_skb_load_bytes(skb, *off, h, 4) < 0)
			return -1;
		if (f->proto == NEXTHDR_FRAGMENT) {
			if ((h[2] << 8 | h[3]) & 0xfff8)
				*frag = 1;
			*off += 8;
		} else if (f->proto == NEXTHDR_AUTH) {
			*off += (h[1] + 2) * 4;
		} else {
			*off += (h[1] + 1) * 8;
		}
		f->proto = h[0];
	}
	return ipv6_is_exthdr(f->proto) ? -1 : 0;
}

#endif
