/*
 * kvf_http_client.h: non-blocking HTTP/1.1 client on a kvf_loop, for the
 * gateway's upstream side, kvf-bench and tests.
 *
 * A client keeps, per upstream "host:port", a pool of keep-alive connections
 * capped at max_conns_per_host; requests beyond the cap wait in a FIFO queue
 * for the next free connection. Each request is written with backpressure
 * (what the socket does not take waits for writability) and its response is
 * parsed with the socket-free parser (kvf_http_parse.h) and handed over as it
 * arrives: on_head with the status and headers, on_body for every piece of
 * the (de-chunked) body as soon as it is read, so an SSE stream passes
 * through without the whole answer being buffered, then on_done - or
 * on_error with a code and the stage the request had reached, so a caller
 * can tell "retry elsewhere is safe" (nothing of the response arrived) from
 * "the answer was cut" (it had started).
 *
 * Lifetime of a request: from kvf_http_client_request() until exactly one of
 * on_done / on_error has run, or until the caller cancels it. No callback
 * runs from inside kvf_http_client_request(): the request starts from the
 * loop. After on_done, on_error or kvf_http_creq_cancel() the handle is
 * gone. Callbacks may start new requests and cancel or pause any request
 * (their own included); they must not destroy the client.
 *
 * Idle pooled connections are watched: one the server closes is dropped at
 * once. A request that finds its reused connection closed or reset before
 * any response byte arrived (the server closed an idle connection just as
 * the request went out) is sent once more on a fresh connection, which is
 * what browsers and Go's net/http do; errors on a fresh connection are
 * reported.
 *
 * Everything runs on the loop's thread.
 */
#ifndef KVF_HTTP_CLIENT_H
#define KVF_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_http_parse.h"
#include "common/kvf_loop.h"

typedef struct kvf_http_client kvf_http_client;
typedef struct kvf_http_creq kvf_http_creq;

/* Zero fields take the defaults in brackets. */
typedef struct kvf_http_client_opts {
	uint32_t max_conns_per_host; /* connections per upstream, idle ones included [64] */
	uint32_t max_idle_per_host;  /* idle connections kept per upstream [32] */
	uint32_t max_queue_per_host; /* requests waiting for a connection [4096]; beyond,
				      * kvf_http_client_request() returns KVF_E_OVERLOAD */
	uint32_t connect_timeout_ms; /* [1000] */
	uint32_t queue_timeout_ms;   /* longest wait for a connection slot [10000] */
	uint32_t idle_timeout_ms;    /* an idle pooled connection is closed after [30000] */
	uint32_t read_buffer_bytes;  /* bytes per recv() [16384] */
	kvf_http_limits limits;      /* response head limits; the body is unlimited */
} kvf_http_client_opts;

/* How far a request got; reported with errors. */
enum kvf_http_cstage {
	KVF_HTTP_CS_QUEUED = 0, /* waiting for a connection slot */
	KVF_HTTP_CS_CONNECT,    /* connecting */
	KVF_HTTP_CS_SEND,       /* connected, request being written, no response byte */
	KVF_HTTP_CS_WAIT,       /* request written, no response byte yet */
	KVF_HTTP_CS_HEAD,       /* response bytes arrived, head incomplete */
	KVF_HTTP_CS_BODY,       /* head delivered (on_head ran) */
};

/* Nonzero when no byte of the response had arrived at that stage: the
 * server sent nothing back, so trying another server shows nothing twice to
 * whoever reads the answer. */
static inline int kvf_http_cstage_before_response(int stage) { return stage < KVF_HTTP_CS_HEAD; }

typedef struct kvf_http_cerror {
	/* KVF_E_CONNREFUSED (connect refused), KVF_E_TIMEOUT (connect, queue,
	 * first-byte or read timeout), KVF_E_CLOSED (reset or EOF: the peer
	 * went away), KVF_E_PARSE (malformed response), KVF_E_IO (other
	 * socket errors), KVF_E_NOMEM. */
	int err;
	int stage;       /* enum kvf_http_cstage at the time */
	const char *msg; /* detail for logs, valid during the callback */
} kvf_http_cerror;

typedef struct kvf_http_creq_cbs {
	/* The final response head (1xx responses are skipped). m is valid
	 * until on_done / on_error / cancel. NULL ok. */
	void (*on_head)(kvf_http_creq *r, const kvf_http_msg *m, void *ud);
	/* A piece of the de-chunked body, valid during the call. NULL ok. */
	void (*on_body)(kvf_http_creq *r, const char *data, size_t len, void *ud);
	/* The response is complete. The handle is freed afterwards. */
	void (*on_done)(kvf_http_creq *r, void *ud);
	/* The request failed. The handle is freed afterwards. */
	void (*on_error)(kvf_http_creq *r, const kvf_http_cerror *e, void *ud);
} kvf_http_creq_cbs;

typedef struct kvf_http_creq_opts {
	const char *method;         /* "GET", "POST", ... [GET] */
	const char *target;         /* request-target, "/v1/completions" [/] */
	/* Extra headers as NULL-terminated name/value pairs (validated; may not
	 * hold Content-Length, Transfer-Encoding or Connection). A Host header
	 * is added unless given. NULL: none. */
	const char *const *headers;
	const void *body;           /* copied; Content-Length is sent for it */
	size_t body_len;
	uint32_t first_byte_timeout_ms; /* after the request was written, until the
					 * first response byte [0: none] */
	uint32_t read_timeout_ms;   /* longest pause between response bytes once they
				     * started, and between request writes [0: none] */
	int close;                  /* send "Connection: close", do not pool */
} kvf_http_creq_opts;

typedef struct kvf_http_client_stats {
	uint64_t requests;       /* accepted by kvf_http_client_request */
	uint64_t completed;      /* on_done */
	uint64_t failed;         /* on_error */
	uint64_t canceled;
	uint64_t connects;       /* connections opened */
	uint64_t connect_errors;
	uint64_t reused;         /* requests sent on a pooled connection */
	uint64_t stale_retries;  /* resent after a reused connection was found closed */
	uint64_t open_conns;     /* gauge: connecting, busy and idle */
	uint64_t idle_conns;     /* gauge */
	uint64_t queued;         /* gauge: waiting for a slot */
	uint64_t bytes_out, bytes_in;
} kvf_http_client_stats;

/* opts may be NULL (defaults). The loop is borrowed. */
int kvf_http_client_new(kvf_loop *loop, const kvf_http_client_opts *opts, kvf_http_client **out);

/* Closes every connection; requests still pending are dropped without a
 * callback (their handles become invalid). NULL ok. Not from a callback. */
void kvf_http_client_destroy(kvf_http_client *c);

/*
 * Starts a request to hostport ("host:port" or "[v6]:port"; resolved on the
 * first request to that upstream and cached). cbs is copied; ud is passed to
 * every callback. 0 and *out (NULL ok), or KVF_E_INVAL (bad address, method,
 * target or header; nothing started), KVF_E_OVERLOAD (max_queue_per_host
 * requests already wait for this upstream), KVF_E_NOMEM.
 */
int kvf_http_client_request(kvf_http_client *c, const char *hostport, const kvf_http_creq_opts *o,
			    const kvf_http_creq_cbs *cbs, void *ud, kvf_http_creq **out);

/* Drops the request: no callback runs for it afterwards. A connection with
 * part of its response unread is closed (client disconnect cancels the
 * upstream). Safe from any callback. */
void kvf_http_creq_cancel(kvf_http_creq *r);

/* Stops (paused = 1) or resumes reading the response: backpressure for a
 * caller whose own consumer is slow. No read timeout runs while paused. */
void kvf_http_creq_pause(kvf_http_creq *r, int paused);

/* The stage the request is in (enum kvf_http_cstage). */
int kvf_http_creq_stage(const kvf_http_creq *r);

/* Nonzero when the request went out on a connection that served earlier
 * requests (for tests and logs). */
int kvf_http_creq_reused(const kvf_http_creq *r);

void kvf_http_client_stats_get(const kvf_http_client *c, kvf_http_client_stats *out);

/* Closes the idle connections of every upstream (or of hostport). */
void kvf_http_client_close_idle(kvf_http_client *c, const char *hostport);

#endif
