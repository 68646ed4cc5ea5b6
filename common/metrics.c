/*
 * metrics.c: the registry behind /metrics and `show stats`.
 *
 * Families keep their series in a list guarded by the registry lock; updates
 * touch only a series' atomics, so the data path never takes the lock.
 * Gauges and histogram sums are doubles stored as bits in 64-bit atomics.
 */
#include "common/kvf_metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

#define KVF_METRIC_MAX_LABELS 8

const double kvf_buckets_ttft_s[KVF_BUCKETS_TTFT_S_N] = {
	0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
	1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
};
const double kvf_buckets_itl_s[KVF_BUCKETS_ITL_S_N] = {
	0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
	0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
};
const double kvf_buckets_e2e_s[KVF_BUCKETS_E2E_S_N] = {
	0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
	30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
};
const double kvf_buckets_fast_s[KVF_BUCKETS_FAST_S_N] = {
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
};

struct kvf_series {
	kvf_series *next;
	kvf_metric *family;
	char **values;               /* one per label name */
	_Atomic uint64_t v;          /* counter value, or gauge bits */
	_Atomic uint64_t sum_bits;   /* histogram sum (double bits) */
	_Atomic uint64_t count;      /* histogram count */
	_Atomic uint64_t *buckets;   /* histogram per-bucket counts (non-cumulative) */
};

struct kvf_metric {
	kvf_metric *next;
	const kvf_metric_def *def;
	kvf_metrics *reg;
	char *label_names[KVF_METRIC_MAX_LABELS];
	size_t nlabels;
	kvf_series *series; /* list; the unlabeled family has exactly one */
};

struct collect_hook {
	kvf_metrics_collect_fn fn;
	void *ud;
};

struct kvf_metrics {
	pthread_mutex_t lock;
	kvf_metric *head, *tail;
	struct collect_hook hooks[16];
	size_t nhooks;
};

static inline uint64_t dbits(double d)
{
	uint64_t u;
	memcpy(&u, &d, sizeof(u));
	return u;
}

static inline double bitsd(uint64_t u)
{
	double d;
	memcpy(&d, &u, sizeof(d));
	return d;
}

static void atomic_add_double(_Atomic uint64_t *a, double v)
{
	uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(a, &old, dbits(bitsd(old) + v), memory_order_relaxed,
						      memory_order_relaxed))
		;
}

/* ---- lifecycle ---- */

int kvf_metrics_new(kvf_metrics **out)
{
	kvf_metrics *m = kvf_calloc(1, sizeof(*m));
	if (!m)
		return kvf_errf(KVF_E_NOMEM, "metrics: out of memory");
	pthread_mutex_init(&m->lock, NULL);
	*out = m;
	return 0;
}

static void series_free(kvf_series *s, size_t nlabels)
{
	if (!s)
		return;
	for (size_t i = 0; s->values && i < nlabels; i++)
		kvf_free(s->values[i]);
	kvf_free(s->values);
	kvf_free((void *)s->buckets);
	kvf_free(s);
}

static void family_free(kvf_metric *f)
{
	kvf_series *s = f->series;
	while (s) {
		kvf_series *n = s->next;
		series_free(s, f->nlabels);
		s = n;
	}
	for (size_t i = 0; i < f->nlabels; i++)
		kvf_free(f->label_names[i]);
	kvf_free(f);
}

void kvf_metrics_destroy(kvf_metrics *m)
{
	if (!m)
		return;
	kvf_metric *f = m->head;
	while (f) {
		kvf_metric *n = f->next;
		family_free(f);
		f = n;
	}
	pthread_mutex_destroy(&m->lock);
	kvf_free(m);
}

int kvf_metrics_on_collect(kvf_metrics *m, kvf_metrics_collect_fn fn, void *ud)
{
	pthread_mutex_lock(&m->lock);
	int rc = 0;
	if (m->nhooks == sizeof(m->hooks) / sizeof(m->hooks[0]))
		rc = kvf_errf(KVF_E_FULL, "metrics: too many collect hooks");
	else
		m->hooks[m->nhooks++] = (struct collect_hook){ fn, ud };
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* ---- registration ---- */

static int valid_name(const char *s, int allow_colon)
{
	if (!s || !*s)
		return 0;
	for (const char *p = s; *p; p++) {
		char c = *p;
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			 (allow_colon && c == ':') || (p != s && c >= '0' && c <= '9');
		if (!ok)
			return 0;
	}
	return 1;
}

static kvf_series *series_new(kvf_metric *f, const char *const *values)
{
	kvf_series *s = kvf_calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->family = f;
	if (f->nlabels) {
		s->values = kvf_calloc(f->nlabels, sizeof(char *));
		if (!s->values)
			goto err;
		for (size_t i = 0; i < f->nlabels; i++)
			if (!(s->values[i] = kvf_strdup(values[i] ? values[i] : "")))
				goto err;
	}
	if (f->def->type == KVF_METRIC_HISTOGRAM) {
		s->buckets = kvf_calloc(f->def->nbuckets + 1, sizeof(*s->buckets));
		if (!s->buckets)
			goto err;
	}
	return s;
err:
	series_free(s, f->nlabels);
	return NULL;
}

static kvf_metric *find_family(kvf_metrics *m, const char *name)
{
	for (kvf_metric *f = m->head; f; f = f->next)
		if (strcmp(f->def->name, name) == 0)
			return f;
	return NULL;
}

static int family_new(kvf_metrics *m, const kvf_metric_def *d, kvf_metric **out)
{
	if (!valid_name(d->name, 1))
		return kvf_errf(KVF_E_INVAL, "metrics: invalid name '%s'", d->name ? d->name : "");
	if (find_family(m, d->name))
		return kvf_errf(KVF_E_EXISTS, "metrics: '%s' registered twice", d->name);
	if (d->type == KVF_METRIC_HISTOGRAM) {
		if (!d->buckets || !d->nbuckets)
			return kvf_errf(KVF_E_INVAL, "metrics: histogram '%s' has no buckets", d->name);
		for (size_t i = 1; i < d->nbuckets; i++)
			if (!(d->buckets[i] > d->buckets[i - 1]))
				return kvf_errf(KVF_E_INVAL, "metrics: '%s' buckets not ascending", d->name);
	}
	kvf_metric *f = kvf_calloc(1, sizeof(*f));
	if (!f)
		return kvf_errf(KVF_E_NOMEM, "metrics: out of memory");
	f->def = d;
	f->reg = m;
	const char *p = d->labels;
	while (p && *p) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		if (f->nlabels == KVF_METRIC_MAX_LABELS) {
			family_free(f);
			return kvf_errf(KVF_E_INVAL, "metrics: '%s' has too many labels", d->name);
		}
		f->label_names[f->nlabels] = kvf_strndup(p, n);
		if (!f->label_names[f->nlabels]) {
			family_free(f);
			return kvf_errf(KVF_E_NOMEM, "metrics: out of memory");
		}
		if (!valid_name(f->label_names[f->nlabels++], 0) || strcmp(f->label_names[f->nlabels - 1], "le") == 0) {
			family_free(f);
			return kvf_errf(KVF_E_INVAL, "metrics: '%s' has an invalid label name", d->name);
		}
		p = comma ? comma + 1 : NULL;
	}
	if (f->nlabels == 0 && !(f->series = series_new(f, NULL))) {
		family_free(f);
		return kvf_errf(KVF_E_NOMEM, "metrics: out of memory");
	}
	*out = f;
	return 0;
}

int kvf_metrics_register(kvf_metrics *m, const kvf_metric_def *defs, size_t n, kvf_metric **out)
{
	pthread_mutex_lock(&m->lock);
	int rc = 0;
	size_t i;
	for (i = 0; i < n; i++) {
		kvf_metric *f = NULL;
		rc = family_new(m, &defs[i], &f);
		if (rc)
			break;
		if (m->tail)
			m->tail->next = f;
		else
			m->head = f;
		m->tail = f;
		out[i] = f;
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* ---- series ---- */

static int same_values(const kvf_series *s, const char *const *values, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s->values[i], values[i] ? values[i] : "") != 0)
			return 0;
	return 1;
}

int kvf_metric_labels(kvf_metric *f, const char *const *values, kvf_series **out)
{
	if (f->nlabels == 0) {
		*out = f->series;
		return 0;
	}
	pthread_mutex_lock(&f->reg->lock);
	kvf_series *s;
	for (s = f->series; s; s = s->next)
		if (same_values(s, values, f->nlabels))
			break;
	if (!s) {
		s = series_new(f, values);
		if (s) {
			/* append: rendering order follows creation order */
			kvf_series **pp = &f->series;
			while (*pp)
				pp = &(*pp)->next;
			*pp = s;
		}
	}
	pthread_mutex_unlock(&f->reg->lock);
	if (!s)
		return kvf_errf(KVF_E_NOMEM, "metrics: out of memory");
	*out = s;
	return 0;
}

void kvf_metric_remove_labels(kvf_metric *f, const char *const *values)
{
	if (f->nlabels == 0)
		return;
	pthread_mutex_lock(&f->reg->lock);
	for (kvf_series **pp = &f->series; *pp; pp = &(*pp)->next) {
		if (same_values(*pp, values, f->nlabels)) {
			kvf_series *s = *pp;
			*pp = s->next;
			series_free(s, f->nlabels);
			break;
		}
	}
	pthread_mutex_unlock(&f->reg->lock);
}

kvf_series *kvf_metric_series(kvf_metric *f)
{
	return f->nlabels ? NULL : f->series;
}

void kvf_series_add(kvf_series *s, uint64_t v)
{
	atomic_fetch_add_explicit(&s->v, v, memory_order_relaxed);
}

void kvf_series_set(kvf_series *s, double v)
{
	atomic_store_explicit(&s->v, dbits(v), memory_order_relaxed);
}

void kvf_series_gauge_add(kvf_series *s, double v)
{
	atomic_add_double(&s->v, v);
}

void kvf_series_observe(kvf_series *s, double v)
{
	const kvf_metric_def *d = s->family->def;
	/* Binary search of the first bound >= v; index nbuckets is +Inf. */
	size_t lo = 0, hi = d->nbuckets;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (v <= d->buckets[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	atomic_fetch_add_explicit(&s->buckets[lo], 1, memory_order_relaxed);
	atomic_add_double(&s->sum_bits, v);
	atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

uint64_t kvf_series_counter(const kvf_series *s)
{
	return atomic_load_explicit(&s->v, memory_order_relaxed);
}

double kvf_series_gauge(const kvf_series *s)
{
	return bitsd(atomic_load_explicit(&s->v, memory_order_relaxed));
}

void kvf_series_hist(const kvf_series *s, uint64_t *count, double *sum)
{
	if (count)
		*count = atomic_load_explicit(&s->count, memory_order_relaxed);
	if (sum)
		*sum = bitsd(atomic_load_explicit(&s->sum_bits, memory_order_relaxed));
}

double kvf_series_quantile(const kvf_series *s, double q)
{
	const kvf_metric_def *d = s->family->def;
	uint64_t total = 0;
	for (size_t i = 0; i <= d->nbuckets; i++)
		total += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
	if (total == 0)
		return NAN;
	double rank = q * (double)total;
	uint64_t cum = 0;
	for (size_t i = 0; i <= d->nbuckets; i++) {
		uint64_t c = atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
		if ((double)(cum + c) >= rank && c > 0) {
			if (i == d->nbuckets) /* +Inf bucket: the highest finite bound */
				return d->buckets[d->nbuckets - 1];
			double lower = i == 0 ? (d->buckets[0] > 0 ? 0 : d->buckets[0]) : d->buckets[i - 1];
			double upper = d->buckets[i];
			return lower + (upper - lower) * ((rank - (double)cum) / (double)c);
		}
		cum += c;
	}
	return d->buckets[d->nbuckets - 1];
}

/* ---- rendering ---- */

static void put_double(kvf_buf *out, double v)
{
	if (isnan(v)) {
		kvf_buf_puts(out, "NaN");
	} else if (isinf(v)) {
		kvf_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
	} else {
		char tmp[40];
		snprintf(tmp, sizeof(tmp), "%.15g", v);
		if (strtod(tmp, NULL) != v)
			snprintf(tmp, sizeof(tmp), "%.17g", v);
		kvf_buf_puts(out, tmp);
	}
}

static void put_label_value(kvf_buf *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\')
			kvf_buf_puts(out, "\\\\");
		else if (*v == '"')
			kvf_buf_puts(out, "\\\"");
		else if (*v == '\n')
			kvf_buf_puts(out, "\\n");
		else
			kvf_buf_putc(out, *v);
	}
}

/* {a="x",b="y"[,le="..."]} or nothing. */
static void put_labels(kvf_buf *out, const kvf_series *s, const char *le)
{
	const kvf_metric *f = s->family;
	if (f->nlabels == 0 && !le)
		return;
	kvf_buf_putc(out, '{');
	for (size_t i = 0; i < f->nlabels; i++) {
		kvf_buf_printf(out, "%s%s=\"", i ? "," : "", f->label_names[i]);
		put_label_value(out, s->values[i]);
		kvf_buf_putc(out, '"');
	}
	if (le)
		kvf_buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
	kvf_buf_putc(out, '}');
}

static void run_hooks(kvf_metrics *m)
{
	pthread_mutex_lock(&m->lock);
	size_t n = m->nhooks;
	struct collect_hook hooks[16];
	memcpy(hooks, m->hooks, n * sizeof(hooks[0]));
	pthread_mutex_unlock(&m->lock);
	for (size_t i = 0; i < n; i++)
		hooks[i].fn(hooks[i].ud);
}

static void put_help(kvf_buf *out, const char *help)
{
	for (; *help; help++) {
		if (*help == '\\')
			kvf_buf_puts(out, "\\\\");
		else if (*help == '\n')
			kvf_buf_puts(out, "\\n");
		else
			kvf_buf_putc(out, *help);
	}
}

int kvf_metrics_render_prometheus(kvf_metrics *m, kvf_buf *out)
{
	static const char *const tnames[] = { "counter", "gauge", "histogram" };
	run_hooks(m);
	pthread_mutex_lock(&m->lock);
	for (kvf_metric *f = m->head; f; f = f->next) {
		const kvf_metric_def *d = f->def;
		kvf_buf_printf(out, "# HELP %s ", d->name);
		put_help(out, d->help ? d->help : "");
		kvf_buf_printf(out, "\n# TYPE %s %s\n", d->name, tnames[d->type]);
		for (kvf_series *s = f->series; s; s = s->next) {
			if (d->type == KVF_METRIC_COUNTER) {
				kvf_buf_puts(out, d->name);
				put_labels(out, s, NULL);
				kvf_buf_printf(out, " %llu\n", (unsigned long long)kvf_series_counter(s));
			} else if (d->type == KVF_METRIC_GAUGE) {
				kvf_buf_puts(out, d->name);
				put_labels(out, s, NULL);
				kvf_buf_putc(out, ' ');
				put_double(out, kvf_series_gauge(s));
				kvf_buf_putc(out, '\n');
			} else {
				uint64_t cum = 0;
				for (size_t i = 0; i <= d->nbuckets; i++) {
					char le[40];
					kvf_buf tmp = KVF_BUF_INIT;
					if (i < d->nbuckets) {
						put_double(&tmp, d->buckets[i]);
						snprintf(le, sizeof(le), "%s", tmp.data ? tmp.data : "");
					} else {
						snprintf(le, sizeof(le), "+Inf");
					}
					kvf_buf_free(&tmp);
					cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
					kvf_buf_printf(out, "%s_bucket", d->name);
					put_labels(out, s, le);
					kvf_buf_printf(out, " %llu\n", (unsigned long long)cum);
				}
				double sum;
				kvf_series_hist(s, NULL, &sum);
				kvf_buf_printf(out, "%s_sum", d->name);
				put_labels(out, s, NULL);
				kvf_buf_putc(out, ' ');
				put_double(out, sum);
				kvf_buf_printf(out, "\n%s_count", d->name);
				put_labels(out, s, NULL);
				/* the count is the +Inf bucket: use it so they always agree */
				kvf_buf_printf(out, " %llu\n", (unsigned long long)cum);
			}
		}
	}
	pthread_mutex_unlock(&m->lock);
	return out->oom ? KVF_E_NOMEM : 0;
}

int kvf_metrics_render_text(kvf_metrics *m, kvf_buf *out)
{
	run_hooks(m);
	pthread_mutex_lock(&m->lock);
	for (kvf_metric *f = m->head; f; f = f->next) {
		const kvf_metric_def *d = f->def;
		for (kvf_series *s = f->series; s; s = s->next) {
			kvf_buf_puts(out, d->name);
			put_labels(out, s, NULL);
			kvf_buf_putc(out, ' ');
			if (d->type == KVF_METRIC_COUNTER) {
				kvf_buf_printf(out, "%llu", (unsigned long long)kvf_series_counter(s));
			} else if (d->type == KVF_METRIC_GAUGE) {
				put_double(out, kvf_series_gauge(s));
			} else {
				uint64_t count;
				double sum;
				kvf_series_hist(s, &count, &sum);
				kvf_buf_printf(out, "count=%llu sum=", (unsigned long long)count);
				put_double(out, sum);
				static const double qs[] = { 0.5, 0.9, 0.99 };
				static const char *const qn[] = { "p50", "p90", "p99" };
				for (int i = 0; i < 3; i++) /* estimates: 6 digits */
					kvf_buf_printf(out, " %s=%.6g", qn[i], kvf_series_quantile(s, qs[i]));
			}
			kvf_buf_putc(out, '\n');
		}
	}
	pthread_mutex_unlock(&m->lock);
	return out->oom ? KVF_E_NOMEM : 0;
}

static void put_json_double(kvf_buf *out, double v)
{
	if (!isfinite(v))
		kvf_buf_puts(out, "null"); /* JSON has no NaN/Inf */
	else
		put_double(out, v);
}

int kvf_metrics_render_json(kvf_metrics *m, kvf_buf *out)
{
	static const char *const tnames[] = { "counter", "gauge", "histogram" };
	run_hooks(m);
	pthread_mutex_lock(&m->lock);
	kvf_buf_putc(out, '{');
	for (kvf_metric *f = m->head; f; f = f->next) {
		const kvf_metric_def *d = f->def;
		kvf_buf_put_json_str(out, d->name, strlen(d->name));
		kvf_buf_printf(out, ":{\"type\":\"%s\",\"help\":", tnames[d->type]);
		kvf_buf_put_json_str(out, d->help ? d->help : "", d->help ? strlen(d->help) : 0);
		kvf_buf_puts(out, ",\"series\":[");
		for (kvf_series *s = f->series; s; s = s->next) {
			kvf_buf_puts(out, "{\"labels\":{");
			for (size_t i = 0; i < f->nlabels; i++) {
				if (i)
					kvf_buf_putc(out, ',');
				kvf_buf_put_json_str(out, f->label_names[i], strlen(f->label_names[i]));
				kvf_buf_putc(out, ':');
				kvf_buf_put_json_str(out, s->values[i], strlen(s->values[i]));
			}
			kvf_buf_puts(out, "},");
			if (d->type == KVF_METRIC_COUNTER) {
				kvf_buf_printf(out, "\"value\":%llu", (unsigned long long)kvf_series_counter(s));
			} else if (d->type == KVF_METRIC_GAUGE) {
				kvf_buf_puts(out, "\"value\":");
				put_json_double(out, kvf_series_gauge(s));
			} else {
				uint64_t count;
				double sum;
				kvf_series_hist(s, &count, &sum);
				kvf_buf_printf(out, "\"count\":%llu,\"sum\":", (unsigned long long)count);
				put_json_double(out, sum);
				kvf_buf_puts(out, ",\"p50\":");
				put_json_double(out, kvf_series_quantile(s, 0.5));
				kvf_buf_puts(out, ",\"p90\":");
				put_json_double(out, kvf_series_quantile(s, 0.9));
				kvf_buf_puts(out, ",\"p99\":");
				put_json_double(out, kvf_series_quantile(s, 0.99));
				kvf_buf_puts(out, ",\"buckets\":[");
				for (size_t i = 0; i <= d->nbuckets; i++) {
					if (i)
						kvf_buf_putc(out, ',');
					kvf_buf_puts(out, "[");
					if (i < d->nbuckets)
						put_double(out, d->buckets[i]);
					else
						kvf_buf_puts(out, "\"+Inf\"");
					kvf_buf_printf(out, ",%llu]",
						       (unsigned long long)atomic_load_explicit(&s->buckets[i], memory_order_relaxed));
				}
				kvf_buf_putc(out, ']');
			}
			kvf_buf_puts(out, s->next ? "}," : "}");
		}
		kvf_buf_puts(out, f->next ? "]}," : "]}");
	}
	kvf_buf_putc(out, '}');
	pthread_mutex_unlock(&m->lock);
	return out->oom ? KVF_E_NOMEM : 0;
}
