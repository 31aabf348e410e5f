/* SPDX-License-Identifier: GPL-2.0 */
/* Per-CPU packet and byte counters (cilia_metrics; slots in cilia.h). */
#ifndef CILIA_METRICS_H
#define CILIA_METRICS_H

#include "maps.h"

static __always_inline void count(__u32 idx, __u64 bytes)
{
	struct metric_value *m = bpf_map_lookup_elem(&cilia_metrics, &idx);

	if (m) {
		m->packets += 1;
		m->bytes += bytes;
	}
}

static __always_inline __u32 drop_slot(__u16 reason)
{
	if (reason == DROP_POLICY_DENY)
		return METRIC_DROP_DENY;
	if (reason == DROP_POLICY_AUTH_REQUIRED)
		return METRIC_DROP_AUTH;
	return METRIC_DROP_POLICY;
}

#endif
