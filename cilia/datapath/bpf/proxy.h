/* SPDX-License-Identifier: GPL-2.0 */
/* Proxy redirects: the DNS proxy's port-53 redirection (toFQDNs). */
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

#endif
