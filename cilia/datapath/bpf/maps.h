/* SPDX-License-Identifier: GPL-2.0 */
/* Every map of the datapath (pinned by name; user space mirrors the layouts in cilia/datapath/maps). */
#ifndef CILIA_MAPS_H
#define CILIA_MAPS_H

#include "common.h"

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
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lxc_key);
	__type(value, struct lxc_value);
	__uint(max_entries, CILIA_LXC_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_lxc SEC(".maps");

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
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key4);
	__type(value, struct ct_value);
	__uint(max_entries, CILIA_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cilia_ct4 SEC(".maps");

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

#endif
