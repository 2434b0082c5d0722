/*
 * clock.h: the time durations are measured in. h2o 2.2.5's h2o_now() is the wall clock (gettimeofday), which steps
 * back and forth with NTP or an operator; a duration taken from it can wrap. Durations that decide something (a peer
 * down, a transfer stalled, a recovery given up) are measured here instead.
 */
#ifndef GW_CLOCK_H
#define GW_CLOCK_H

#include <stdint.h>
#include <time.h>

/* milliseconds of a clock that never goes back (CLOCK_MONOTONIC) */
static inline uint64_t gw_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
