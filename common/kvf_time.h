/*
 * kvf_time.h: monotonic clocks in the units the code uses.
 */
#ifndef KVF_TIME_H
#define KVF_TIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t kvf_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t kvf_now_us(void) { return kvf_now_ns() / 1000ull; }
static inline uint64_t kvf_now_ms(void) { return kvf_now_ns() / 1000000ull; }

/* Wall clock in seconds since the epoch (for "created" fields, logs). */
static inline uint64_t kvf_wall_s(void) { return (uint64_t)time(NULL); }

#endif
