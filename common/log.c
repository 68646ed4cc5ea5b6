/*
 * log.c: logfmt lines into a per-thread buffer, handed to one sink call.
 * The default sink issues a single write(2) so lines from several threads or
 * processes sharing stderr do not interleave.
 */
#include "common/kvf_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/kvf_err.h"
#include "common/kvf_time.h"

#define KVF_LOG_LINE_MAX 2048

_Atomic int kvf_log_level_cur = KVF_LOG_INFO;

static void stderr_sink(void *ud, int level, const char *line, size_t len)
{
	(void)ud;
	(void)level;
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

static kvf_log_sink_fn sink = stderr_sink;
static void *sink_ud;

static const char *const level_names[] = { "error", "warn", "info", "debug", "trace" };

void kvf_log_set_sink(kvf_log_sink_fn fn, void *ud)
{
	sink = fn ? fn : stderr_sink;
	sink_ud = fn ? ud : NULL;
}

void kvf_log_set_level(int level)
{
	if (level < KVF_LOG_ERROR)
		level = KVF_LOG_ERROR;
	if (level > KVF_LOG_TRACE)
		level = KVF_LOG_TRACE;
	atomic_store(&kvf_log_level_cur, level);
}

int kvf_log_level_parse(const char *s, int *level)
{
	for (int i = 0; i <= KVF_LOG_TRACE; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*level = i;
			return 0;
		}
	}
	return kvf_errf(KVF_E_INVAL, "unknown log level '%s' (error|warn|info|debug|trace)", s);
}

const char *kvf_log_level_name(int level)
{
	if (level < 0 || level > KVF_LOG_TRACE)
		return "?";
	return level_names[level];
}

void kvf_log_write(int level, const char *mod, const char *msg, uint32_t suppressed,
		   const char *fields_fmt, ...)
{
	static _Thread_local char line[KVF_LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);

	int n = snprintf(line, sizeof(line),
			 "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s mod=%s msg=\"%s\"",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, kvf_log_level_name(level), mod, msg);
	size_t len = (n < 0) ? 0 : ((size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);

	if (fields_fmt && fields_fmt[0] && len < sizeof(line) - 2) {
		line[len++] = ' ';
		va_list ap;
		va_start(ap, fields_fmt);
		n = vsnprintf(line + len, sizeof(line) - len, fields_fmt, ap);
		va_end(ap);
		if (n > 0)
			len += ((size_t)n < sizeof(line) - len) ? (size_t)n : sizeof(line) - len - 1;
		else
			len--; /* the fields came out empty: drop the separator */
	}
	if (suppressed && len < sizeof(line) - 2) {
		n = snprintf(line + len, sizeof(line) - len, " suppressed=%u", suppressed);
		if (n > 0)
			len += ((size_t)n < sizeof(line) - len) ? (size_t)n : sizeof(line) - len - 1;
	}
	/* Always end with exactly one newline, even when truncated. */
	if (len >= sizeof(line) - 1)
		len = sizeof(line) - 2;
	for (size_t i = 0; i < len; i++)
		if (line[i] == '\n')
			line[i] = ' ';
	line[len++] = '\n';
	line[len] = '\0';
	sink(sink_ud, level, line, len);
}

int kvf_log_rl_allow(kvf_log_rl *rl, uint32_t burst, uint32_t interval_ms, uint32_t *suppressed)
{
	uint64_t now = kvf_now_ms();
	uint64_t start = atomic_load_explicit(&rl->window_start_ms, memory_order_relaxed);
	if (start == 0 || now - start >= interval_ms) {
		/* New window: one thread wins the reset; the others count as usual. */
		if (atomic_compare_exchange_strong(&rl->window_start_ms, &start, now))
			atomic_store(&rl->count, 0);
	}
	uint32_t c = atomic_fetch_add(&rl->count, 1);
	if (c < burst) {
		*suppressed = atomic_exchange(&rl->suppressed, 0);
		return 1;
	}
	atomic_fetch_add(&rl->suppressed, 1);
	return 0;
}
