/*
 * kvf_log.h: structured logging for every daemon and library.
 *
 * A line is logfmt: `ts=2026-11-24T12:00:00.123Z level=info mod=http
 * msg="listening" addr=127.0.0.1:8080`. Callers give a constant message and a
 * printf format producing the key=value fields:
 *     KVF_INFO("http", "listening", "addr=%s port=%u", host, port);
 * The level is checked before anything is formatted. Lines go to a sink
 * callback (default: one write(2) to stderr per line); libraries never print.
 * KVF_LOG_RL() limits a call site to a burst per interval and reports how many
 * lines it suppressed (`suppressed=N`) when it speaks again.
 * Thread-safe: formatting uses a per-thread buffer, the sink is called once
 * per line from the logging thread.
 */
#ifndef KVF_LOG_H
#define KVF_LOG_H

#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>

enum kvf_log_level {
	KVF_LOG_ERROR = 0,
	KVF_LOG_WARN,
	KVF_LOG_INFO,
	KVF_LOG_DEBUG,
	KVF_LOG_TRACE,
};

extern _Atomic int kvf_log_level_cur;

/* Sink: receives one complete line (with trailing newline). */
typedef void (*kvf_log_sink_fn)(void *ud, int level, const char *line, size_t len);

/* Installs a sink (NULL restores the stderr sink). Not thread-safe: call at
 * start-up, before other threads log. */
void kvf_log_set_sink(kvf_log_sink_fn fn, void *ud);
void kvf_log_set_level(int level);
/* "error|warn|info|debug|trace" -> level; KVF_E_INVAL on anything else. */
int kvf_log_level_parse(const char *s, int *level);
const char *kvf_log_level_name(int level);

/* Formats and emits one line. Prefer the macros, which check the level. */
void kvf_log_write(int level, const char *mod, const char *msg, uint32_t suppressed,
		   const char *fields_fmt, ...) __attribute__((format(printf, 5, 6)));

#define KVF_LOG(level, mod, msg, ...)                                          \
	do {                                                                   \
		if ((level) <= atomic_load_explicit(&kvf_log_level_cur,        \
						    memory_order_relaxed))     \
			kvf_log_write((level), (mod), (msg), 0, __VA_ARGS__);  \
	} while (0)

#define KVF_ERROR(mod, msg, ...) KVF_LOG(KVF_LOG_ERROR, mod, msg, __VA_ARGS__)
#define KVF_WARN(mod, msg, ...) KVF_LOG(KVF_LOG_WARN, mod, msg, __VA_ARGS__)
#define KVF_INFO(mod, msg, ...) KVF_LOG(KVF_LOG_INFO, mod, msg, __VA_ARGS__)
#define KVF_DEBUG(mod, msg, ...) KVF_LOG(KVF_LOG_DEBUG, mod, msg, __VA_ARGS__)
#define KVF_TRACE(mod, msg, ...) KVF_LOG(KVF_LOG_TRACE, mod, msg, __VA_ARGS__)

/* Rate-limit state of one call site. */
typedef struct kvf_log_rl {
	_Atomic uint64_t window_start_ms;
	_Atomic uint32_t count;      /* lines in the current window */
	_Atomic uint32_t suppressed; /* lines dropped since the last one printed */
} kvf_log_rl;

/* Returns nonzero when the caller may print; *suppressed gets the number of
 * lines dropped since the last printed one. */
int kvf_log_rl_allow(kvf_log_rl *rl, uint32_t burst, uint32_t interval_ms, uint32_t *suppressed);

/* At most `burst` lines per interval_ms from this call site. */
#define KVF_LOG_RL(level, burst, interval_ms, mod, msg, ...)                   \
	do {                                                                   \
		static kvf_log_rl kvf_rl_;                                     \
		uint32_t kvf_sup_;                                             \
		if ((level) <= atomic_load_explicit(&kvf_log_level_cur,        \
						    memory_order_relaxed) &&   \
		    kvf_log_rl_allow(&kvf_rl_, (burst), (interval_ms), &kvf_sup_)) \
			kvf_log_write((level), (mod), (msg), kvf_sup_, __VA_ARGS__); \
	} while (0)

#endif
