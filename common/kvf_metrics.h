/*
 * kvf_metrics.h: counters, gauges and histograms with labels, declared once
 * per module in a table (HAProxy's stat columns in spirit):
 *
 *   static const kvf_metric_def fabric_metrics[] = {
 *       { "kvf_fabric_bytes_total", KVF_METRIC_COUNTER, "Bytes moved", "transport,op", NULL, 0 },
 *       { "kvf_fabric_op_seconds", KVF_METRIC_HISTOGRAM, "Op latency", "transport",
 *         kvf_buckets_fast_s, KVF_BUCKETS_FAST_S_N },
 *   };
 *   kvf_metric *h[2];
 *   kvf_metrics_register(reg, fabric_metrics, 2, h);
 *
 * The same registry renders Prometheus text (format 0.0.4) for /metrics and
 * the `show stats [json]` output of the admin socket.
 *
 * Threads: registering and creating series take a lock (do it at start-up or
 * when a peer appears, never per operation); updates are lock-free atomics on
 * a series handle the caller keeps; rendering takes the lock.
 */
#ifndef KVF_METRICS_H
#define KVF_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_buf.h"

typedef enum kvf_metric_type {
	KVF_METRIC_COUNTER,   /* monotonically increasing integer */
	KVF_METRIC_GAUGE,     /* any double */
	KVF_METRIC_HISTOGRAM, /* observations into fixed buckets */
} kvf_metric_type;

typedef struct kvf_metric_def {
	const char *name;      /* kvf_<component>_<what>_<unit>, or vllm:... */
	kvf_metric_type type;
	const char *help;
	const char *labels;    /* comma-separated label names; NULL or "" for none */
	const double *buckets; /* histogram upper bounds, ascending; +Inf is implied */
	size_t nbuckets;
} kvf_metric_def;

typedef struct kvf_metrics kvf_metrics; /* a registry */
typedef struct kvf_metric kvf_metric;   /* one family (a def) */
typedef struct kvf_series kvf_series;   /* one label set of a family */

/* vLLM's bucket bounds, so dashboards built for vLLM read ours unchanged. */
extern const double kvf_buckets_ttft_s[];  /* time to first token */
extern const double kvf_buckets_itl_s[];   /* inter-token latency */
extern const double kvf_buckets_e2e_s[];   /* end-to-end request latency */
extern const double kvf_buckets_fast_s[];  /* 10 us .. 1 s: lookups, RPCs, transfers */
#define KVF_BUCKETS_TTFT_S_N 22
#define KVF_BUCKETS_ITL_S_N 19
#define KVF_BUCKETS_E2E_S_N 21
#define KVF_BUCKETS_FAST_S_N 16

int kvf_metrics_new(kvf_metrics **out);
void kvf_metrics_destroy(kvf_metrics *m); /* NULL ok */

/* Registers n definitions (borrowed: static tables) and writes their family
 * handles to out[0..n). Names must be unique in the registry and valid
 * Prometheus names; histogram buckets strictly ascending. */
int kvf_metrics_register(kvf_metrics *m, const kvf_metric_def *defs, size_t n, kvf_metric **out);

/* Called at the start of every rendering, on the rendering thread, to refresh
 * gauges computed from state (queue depths, pool usage). */
typedef void (*kvf_metrics_collect_fn)(void *ud);
int kvf_metrics_on_collect(kvf_metrics *m, kvf_metrics_collect_fn fn, void *ud);

/* The series of a labeled family for these values (one per label name),
 * created on first use. Values are copied. */
int kvf_metric_labels(kvf_metric *f, const char *const *values, kvf_series **out);
/* Drops a labeled series (a peer that left). Handles to it become invalid. */
void kvf_metric_remove_labels(kvf_metric *f, const char *const *values);
/* The single series of an unlabeled family. */
kvf_series *kvf_metric_series(kvf_metric *f);

void kvf_series_add(kvf_series *s, uint64_t v);   /* counter */
void kvf_series_set(kvf_series *s, double v);     /* gauge */
void kvf_series_gauge_add(kvf_series *s, double v);
void kvf_series_observe(kvf_series *s, double v); /* histogram */
uint64_t kvf_series_counter(const kvf_series *s);
double kvf_series_gauge(const kvf_series *s);
/* Histogram totals; either pointer may be NULL. */
void kvf_series_hist(const kvf_series *s, uint64_t *count, double *sum);

/* Unlabeled shortcuts. */
static inline void kvf_metric_inc(kvf_metric *f) { kvf_series_add(kvf_metric_series(f), 1); }
static inline void kvf_metric_add(kvf_metric *f, uint64_t v) { kvf_series_add(kvf_metric_series(f), v); }
static inline void kvf_metric_set(kvf_metric *f, double v) { kvf_series_set(kvf_metric_series(f), v); }
static inline void kvf_metric_observe(kvf_metric *f, double v) { kvf_series_observe(kvf_metric_series(f), v); }

/* Prometheus text exposition format 0.0.4. */
int kvf_metrics_render_prometheus(kvf_metrics *m, kvf_buf *out);
/* `show stats`: one line per series; histograms as count, sum, p50/p90/p99. */
int kvf_metrics_render_text(kvf_metrics *m, kvf_buf *out);
/* `show stats json`: {"name":{"type","help","series":[{"labels":{},...}]}}. */
int kvf_metrics_render_json(kvf_metrics *m, kvf_buf *out);

/* Quantile q (0..1) estimated from bucket counts by linear interpolation,
 * as Prometheus' histogram_quantile(); NaN without observations. */
double kvf_series_quantile(const kvf_series *s, double q);

#endif
