/* SPDX-License-Identifier: GPL-2.0 */
/* Constants and the per-packet state every part of the datapath shares: the parsed flow (L3/L4
 * headers read once per packet), the verdict of a policy lookup, and the packet context (endpoint
 * and config, each looked up once per packet). */
#ifndef CILIA_COMMON_H
#define CILIA_COMMON_H

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
#define CT_TIMEOUT_S 60
#define WORLD_ID 2
#define WORLD_IPV6_ID 10 /* reserved:world-ipv6: an IPv6 address outside every prefix */
#define NSEC 1000000000ULL

struct flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport; /* ICMP echo: the echo id, so request and reply are mirrored tuples */
	__be16 dport;
	__u16 policy_port; /* host order: destination port, or ICMP type */
	__u16 l4_off; /* offset of the L4 header in the frame */
	__u8 proto;
	__u8 family;
	__u8 tcp_flags;
	__u8 ct_create; /* may open a conntrack entry (TCP SYN, echo request, UDP/SCTP/other) */
};

struct verdict {
	__u32 cookie;
	__u16 reason; /* 0 = allowed */
	__be16 proxy_port; /* the chosen entry's proxy port (network order), 0 = none */
	__u8 match_type;
	__u8 lpm_prefix;
	__u8 exact;
};

/* What one packet needs from the maps, looked up once at the entry point. */
struct pkt {
	struct flow f;
	struct endpoint_value *ep;
	struct config_value *cfg; /* NULL only if the config map is unreadable: defaults apply */
};

#endif
