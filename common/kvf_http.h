/*
 * kvf_http.h: HTTP/1.1 server on a kvf_loop (one server per loop thread).
 *
 * The server accepts connections, parses requests with the socket-free parser
 * (kvf_http_parse.h), buffers each request body up to the body limit and hands
 * complete requests to one handler, in order per connection. The handler
 * answers at once or later (asynchronously, from the loop thread), with one
 * call (kvf_http_respond) or as a stream (kvf_http_begin + kvf_http_send /
 * kvf_http_send_sse + kvf_http_end). Pipelined requests are parsed ahead (up
 * to max_pipeline per connection) but each waits until the response before it
 * has finished.
 *
 * Request lifetime: a kvf_http_req is valid from the handler call until the
 * handler finishes it with kvf_http_respond(), kvf_http_respond_error() or
 * kvf_http_end() - always, even when the client went away (those calls then
 * return KVF_E_CLOSED but still release it). When the connection dies first,
 * the request's on_close callback runs once (from the loop, never from inside
 * a kvf_http_* call); the handler stops producing and still calls kvf_http_end().
 * Everything here runs on the loop's thread; other threads hand work over with
 * kvf_loop_post().
 *
 * Errors on the wire: a request the parser rejects is answered with the
 * parser's status (400, 413, 414, 431, 501, 505) and a small JSON body in
 * OpenAI's error shape, after the responses to earlier pipelined requests,
 * and that connection is closed (lingering: the rest of the request is read
 * and dropped for a moment so the client sees the answer, not a reset).
 * Other connections are unaffected. A client that does not finish its head
 * within header_timeout_ms gets 408 (or a silent close if it sent nothing);
 * idle keep-alive connections close after idle_timeout_ms.
 */
#ifndef KVF_HTTP_H
#define KVF_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_http_parse.h"
#include "common/kvf_loop.h"

typedef struct kvf_http_server kvf_http_server;
typedef struct kvf_http_req kvf_http_req;

/* Zero fields take the defaults in brackets. */
typedef struct kvf_http_server_opts {
	const char *listen;          /* "host:port"; port 0 picks one [required unless listen_fd] */
	int listen_fd;               /* > 0: an already listening socket to use (taken over) */
	int backlog;                 /* [511] */
	kvf_http_limits limits;      /* parser limits [kvf_http_limits defaults] */
	uint32_t header_timeout_ms;  /* first byte to end of head, and for a new connection
				      * accept to end of head [10000] */
	uint32_t body_timeout_ms;    /* longest pause while a body is arriving [30000] */
	uint32_t idle_timeout_ms;    /* keep-alive wait for the next request [60000] */
	uint32_t send_timeout_ms;    /* longest pause while output is pending [60000] */
	uint32_t linger_ms;          /* after an error answer, drain input this long [2000] */
	uint32_t max_conns;          /* accepting pauses at this many open connections [1024] */
	uint32_t max_pipeline;       /* requests parsed ahead per connection, the one being
				      * answered included [16] */
	uint32_t read_buffer_bytes;  /* per recv() and the cap on unparsed input [16384] */
	const char *server_name;     /* "Server:" header value; NULL: none */
} kvf_http_server_opts;

/* Counters since creation; gauges now. Read from the loop thread. */
typedef struct kvf_http_server_stats {
	uint64_t accepted;        /* connections accepted */
	uint64_t requests;        /* requests handed to the handler */
	uint64_t responses[6];    /* responses finished, by status class: [2] = 2xx ... */
	uint64_t continues;       /* 100 Continue sent */
	uint64_t parse_errors;    /* requests that could not be read: the err_* below except
				   * err_408, plus 503s for lack of memory */
	uint64_t err_400, err_408, err_413, err_414, err_431, err_501, err_505;
	uint64_t timeouts;        /* connections closed by a header/body/idle/send timeout */
	uint64_t client_aborts;   /* connections lost with a response unfinished */
	uint64_t accept_errors;
	uint64_t bytes_in, bytes_out;
	uint64_t open_conns;      /* gauge */
	uint64_t active_reqs;     /* gauge: handed to the handler, not finished */
} kvf_http_server_stats;

/* Called on the loop thread for each complete request. */
typedef void (*kvf_http_handler)(kvf_http_req *req, void *ud);
/* Request callbacks: on_close (connection lost before the response finished)
 * and on_drain (the connection's buffered output, non-empty before, has all
 * been written to the socket). */
typedef void (*kvf_http_req_cb)(kvf_http_req *req, void *ud);
typedef void (*kvf_http_server_cb)(kvf_http_server *s, void *ud);

/*
 * Creates a server listening on opts->listen (or opts->listen_fd) and
 * registered on loop. handler(req, ud) gets every request. 0 and *out, or an
 * error (bad address, bind failure: message in kvf_errmsg()).
 */
int kvf_http_server_new(kvf_loop *loop, const kvf_http_server_opts *opts,
			kvf_http_handler handler, void *ud, kvf_http_server **out);

/* The bound port (useful with port 0). */
uint16_t kvf_http_server_port(const kvf_http_server *s);

/*
 * Graceful shutdown: stops accepting, closes idle connections and those still
 * receiving a request, lets every request already handed to the handler
 * finish (its response carries "Connection: close"), drops pipelined requests
 * not yet started. done(s, ud) runs once the last connection is gone - maybe
 * before this call returns. Destroy the server after that.
 */
void kvf_http_server_shutdown(kvf_http_server *s, kvf_http_server_cb done, void *ud);

/*
 * Closes everything now. Requests still held by the handler get their
 * on_close callback during this call and are freed: the handler must not use
 * them afterwards. NULL is a no-op.
 */
void kvf_http_server_destroy(kvf_http_server *s);

void kvf_http_server_stats_get(const kvf_http_server *s, kvf_http_server_stats *out);

/* ---- request accessors (valid until the request is finished) ---- */

/* The parsed head: method, path, query, headers (kvf_http_msg_header()). */
const kvf_http_msg *kvf_http_req_msg(const kvf_http_req *req);
int kvf_http_req_method(const kvf_http_req *req);
kvf_http_str kvf_http_req_path(const kvf_http_req *req);
kvf_http_str kvf_http_req_query(const kvf_http_req *req);
/* First header named `name` (case-insensitive): 0 and *out, or KVF_E_NOTFOUND. */
int kvf_http_req_header(const kvf_http_req *req, const char *name, kvf_http_str *out);
/* The whole (de-chunked) body, NUL-terminated for convenience; len may be 0. */
const char *kvf_http_req_body(const kvf_http_req *req, size_t *len);
/* "ip:port" of the client (for logs); "?" when unknown. */
const char *kvf_http_req_peer(kvf_http_req *req);
kvf_http_server *kvf_http_req_server(const kvf_http_req *req);
/* Nonzero once the connection is gone: stop producing, call kvf_http_end(). */
int kvf_http_req_closed(const kvf_http_req *req);

/* Callbacks for this request (NULL clears). */
void kvf_http_req_on_close(kvf_http_req *req, kvf_http_req_cb cb, void *ud);
void kvf_http_req_on_drain(kvf_http_req *req, kvf_http_req_cb cb, void *ud);
/* Bytes of this connection's output not yet accepted by the socket. A
 * streaming producer sends while this is under its own mark and resumes in
 * on_drain; output sent from inside the handler is flushed when it returns. */
size_t kvf_http_req_pending(const kvf_http_req *req);
/* Closes the connection after this response (sends "Connection: close"). */
void kvf_http_req_set_close(kvf_http_req *req);

/* ---- responding ---- */

/*
 * Complete response with Content-Length: status, content_type (NULL: none),
 * extra headers as NULL-terminated name/value pairs (NULL: none; must not
 * set Content-Length, Transfer-Encoding or Connection), body (copied).
 * Finishes and releases the request whatever it returns: 0; KVF_E_CLOSED
 * (client gone); KVF_E_INVAL (bad header or status: a 500 went out instead);
 * KVF_E_STATE (the response had already begun: the connection is closed).
 */
int kvf_http_respond(kvf_http_req *req, int status, const char *content_type,
		     const char *const *headers, const void *body, size_t len);
/* kvf_http_respond() with an OpenAI-style JSON error body for message. */
int kvf_http_respond_error(kvf_http_req *req, int status, const char *message);

/*
 * Starts a streamed response: chunked for HTTP/1.1 clients, raw until close
 * for HTTP/1.0 ones; content_length >= 0 sends Content-Length instead and the
 * writes must add up to exactly that. 0, KVF_E_CLOSED (request still held:
 * call kvf_http_end), KVF_E_INVAL (bad status/header: nothing sent, request
 * still held) or KVF_E_STATE (already begun).
 */
int kvf_http_begin(kvf_http_req *req, int status, const char *content_type,
		   const char *const *headers, int64_t content_length);
/* kvf_http_begin() for Server-Sent Events: 200, text/event-stream,
 * Cache-Control: no-cache, plus headers. */
int kvf_http_begin_sse(kvf_http_req *req, const char *const *headers);
/* Sends body bytes (copied; a chunk of its own when chunked). 0,
 * KVF_E_CLOSED, KVF_E_STATE (not begun), KVF_E_RANGE (beyond Content-Length).
 * Output is buffered without bound: watch kvf_http_req_pending(). */
int kvf_http_send(kvf_http_req *req, const void *data, size_t len);
/* One SSE event (framing as kvf_http_write_sse()); KVF_E_INVAL for a bad
 * event or id (nothing sent). */
int kvf_http_send_sse(kvf_http_req *req, const char *event, const char *id,
		      const char *data, size_t len);
/* An SSE comment (keep-alive ping). */
int kvf_http_send_sse_comment(kvf_http_req *req, const char *text);
/*
 * Ends the response (last chunk) and releases the request, whatever it
 * returns: 0, KVF_E_CLOSED, or KVF_E_RANGE when a Content-Length body came
 * up short (the connection is then closed so the client sees the truncation).
 * Calling it before kvf_http_begin() answers 500.
 */
int kvf_http_end(kvf_http_req *req);

#endif
