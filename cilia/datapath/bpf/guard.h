/* SPDX-License-Identifier: GPL-2.0 */
/* The lab's address guard: lab traffic never leaves the lab's ranges (198.18.0.0/15 and
 * 2001:2::/48). A packet on a device the datapath is attached to whose source or destination is
 * outside them is dropped before conntrack and policy, so neither an allow rule, audit mode nor a
 * conntrack entry lets it through. Mirrored by cilia/datapath/guard.py. */
#ifndef CILIA_GUARD_H
#define CILIA_GUARD_H

#include "common.h"

static __always_inline int in_lab(const struct flow *f, const __u8 *a)
{
	if (f->family == 4)
		return a[0] == 198 && (a[1] & 0xfe) == 18;
	return a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x00 && a[3] == 0x02 && a[4] == 0x00 && a[5] == 0x00;
}

static __always_inline int outside_lab(const struct flow *f)
{
	return !in_lab(f, f->saddr) || !in_lab(f, f->daddr);
}

#endif
