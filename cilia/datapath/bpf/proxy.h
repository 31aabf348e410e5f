/* SPDX-License-Identifier: GPL-2.0 */
/* Proxy redirects.
 *
 * The generic one (policy entries with a proxy port, both directions): the connection is handed to
 * the node's transparent listener on that port without rewriting any address (as Cilium's BPF
 * TPROXY does): bpf_sk_assign on tc ingress to the connection's own socket if the proxy has one
 * (a later packet) or else to the listener, and CILIA_MARK_TO_PROXY so the node's policy routing
 * delivers it locally. The proxy sees the original destination as its socket's local address.
 * Nothing listening = dropped (fail closed). Packets entering a pod (tc egress, no sk_assign
 * there) hairpin into the same device's ingress first (proxy_hairpin). IPv4 and IPv6 take the
 * same path (sock_tuple fills either lookup tuple; the proxies listen on both families, and the
 * policy routing for CILIA_MARK_TO_PROXY exists for both).
 *
 * And the DNS proxy's port-53 redirection (toFQDNs), which rewrites the destination: IPv4 only,
 * and only for a datapath whose DNS proxy is not transparent (cilia_dns_redirect entries). */
#ifndef CILIA_PROXY_H
#define CILIA_PROXY_H

#include "lb.h"

/* An allowed DNS query (UDP or TCP port 53) of an endpoint with DNS rules goes to the DNS proxy
 * instead; the proxy forwards it to the server it was sent to (policy was decided on that server).
 * Every packet of a TCP connection is redirected, so the proxy's TCP stack sees the whole stream. */
static __always_inline void dns_redirect(struct __sk_buff *skb, __u32 ep_id, const struct flow *f)
{
	struct lb4_tuple t = {.sport = f->sport, .proto = f->proto};
	struct lb4_addr *proxy, server = {.port = f->dport};
	__be32 old_addr, new_addr;

	if (f->family != 4 || (f->proto != IPPROTO_UDP && f->proto != IPPROTO_TCP) ||
	    f->dport != bpf_htons(53))
		return;
	proxy = bpf_map_lookup_elem(&cilia_dns_redirect, &ep_id);
	if (!proxy)
		return;
	__builtin_memcpy(server.addr, f->daddr, 4);
	__builtin_memcpy(t.saddr, f->saddr, 4);
	__builtin_memcpy(t.daddr, proxy->addr, 4);
	t.dport = proxy->port;
	bpf_map_update_elem(&cilia_dns_rev, &t, &server, BPF_ANY);
	__builtin_memcpy(&old_addr, f->daddr, 4);
	__builtin_memcpy(&new_addr, proxy->addr, 4);
	rewrite4(skb, f->l4_off, f->proto, ETH_HLEN + 16, f->l4_off + 2, old_addr, new_addr, f->dport,
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

static __always_inline int sock_tuple(const struct flow *f, struct bpf_sock_tuple *t, __be16 dport)
{
	if (f->family == 4) {
		__builtin_memcpy(&t->ipv4.saddr, f->saddr, 4);
		__builtin_memcpy(&t->ipv4.daddr, f->daddr, 4);
		t->ipv4.sport = f->sport;
		t->ipv4.dport = dport;
		return sizeof(t->ipv4);
	}
	__builtin_memcpy(t->ipv6.saddr, f->saddr, 16);
	__builtin_memcpy(t->ipv6.daddr, f->daddr, 16);
	t->ipv6.sport = f->sport;
	t->ipv6.dport = dport;
	return sizeof(t->ipv6);
}

/* Assign the packet to the local socket of its own connection (established lookup on the packet's
 * tuple, e.g. the proxy's accepted or onward socket), or with ``proxy_port`` != 0 to the listener on
 * that port; mark it for local delivery. 0 on success, -1 when no such socket exists. */
static __always_inline int proxy_assign(struct __sk_buff *skb, const struct flow *f, __be16 proxy_port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 len;
	long r;

	if (f->proto == IPPROTO_TCP) {
		len = sock_tuple(f, &t, f->dport);
		sk = bpf_skc_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
		if (sk && (sk->state == BPF_TCP_LISTEN || sk->state == BPF_TCP_TIME_WAIT)) {
			bpf_sk_release(sk);
			sk = NULL;
		}
		if (!sk && proxy_port) {
			len = sock_tuple(f, &t, proxy_port);
			sk = bpf_skc_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
			if (sk && sk->state != BPF_TCP_LISTEN) {
				bpf_sk_release(sk);
				sk = NULL;
			}
		}
	} else if (f->proto == IPPROTO_UDP) {
		len = sock_tuple(f, &t, proxy_port ? proxy_port : f->dport);
		sk = bpf_sk_lookup_udp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
	} else {
		return -1;
	}
	if (!sk)
		return -1;
	r = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (r < 0)
		return -1;
	/* a fresh context pointer: clang may otherwise store through an &skb->mark kept from an
	 * earlier read, which the verifier refuses (dereference of modified ctx ptr) */
	asm volatile("" : "+r"(skb));
	skb->mark = CILIA_MARK_TO_PROXY;
	return 0;
}

/* From tc egress of a pod's device: hand the packet to the same device's ingress, marked with the
 * proxy port, where from_container assigns it to the proxy. The destination MAC becomes the
 * device's own (the source MAC of a packet it sends), so the stack takes the packet as its own. */
static __always_inline int proxy_hairpin(struct __sk_buff *skb, __u16 proxy_port)
{
	__u8 mac[6];

	if (bpf_skb_load_bytes(skb, 6, mac, 6) < 0 || bpf_skb_store_bytes(skb, 0, mac, 6, 0) < 0)
		return TC_ACT_SHOT;
	skb->mark = CILIA_MARK_HAIRPIN | ((__u32)proxy_port << 16);
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

#endif
