/*
 * kvf_err.h: error codes shared by every kvfabric library.
 *
 * Functions return 0 or a negative KVF_E_* code; results go to out-params.
 * The codes come from one table (KVF_ERRORS) that generates the enum, the
 * names and the messages. A function that fails may also leave a detailed,
 * human-readable message in a per-thread buffer (kvf_errf()); callers read it
 * with kvf_errmsg() before the next failing call on the same thread.
 * The table is append-only: codes are part of wire protocols and logs.
 */
#ifndef KVF_ERR_H
#define KVF_ERR_H

#include <stdarg.h>

/*      name          value  message */
#define KVF_ERRORS(X)                                                         \
	X(OK,            0,  "success")                                       \
	X(NOMEM,        -1,  "out of memory")                                 \
	X(INVAL,        -2,  "invalid argument")                              \
	X(IO,           -3,  "I/O error")                                     \
	X(AGAIN,        -4,  "try again: more data needed")                   \
	X(TIMEOUT,      -5,  "timed out")                                     \
	X(CLOSED,       -6,  "connection closed")                             \
	X(PROTO,        -7,  "protocol error")                                \
	X(VERSION,      -8,  "unsupported protocol version")                  \
	X(TOOBIG,       -9,  "too large")                                     \
	X(RANGE,       -10,  "out of range")                                  \
	X(NOTFOUND,    -11,  "not found")                                     \
	X(EXISTS,      -12,  "already exists")                                \
	X(BUSY,        -13,  "resource busy")                                 \
	X(ACCESS,      -14,  "access denied")                                 \
	X(UNSUPPORTED, -15,  "not supported")                                 \
	X(NODEV,       -16,  "no such device")                                \
	X(CONFIG,      -17,  "configuration error")                           \
	X(PARSE,       -18,  "parse error")                                   \
	X(CANCELED,    -19,  "canceled")                                      \
	X(CONNREFUSED, -20,  "connection refused")                            \
	X(PEERDEAD,    -21,  "peer failed")                                   \
	X(FULL,        -22,  "no space left")                                 \
	X(STATE,       -23,  "invalid state for this operation")              \
	X(CUDA,        -24,  "CUDA error")                                    \
	X(MODEL,       -25,  "invalid model")                                 \
	X(OVERLOAD,    -26,  "overloaded")                                    \
	X(INTERNAL,    -27,  "internal error")

enum kvf_err {
#define KVF_ERR_ENUM(name, val, msg) KVF_E_##name = val,
	KVF_ERRORS(KVF_ERR_ENUM)
#undef KVF_ERR_ENUM
};

/* Static message for a code ("out of memory"); never NULL. */
const char *kvf_strerror(int err);

/* Static symbolic name for a code ("NOMEM"); never NULL. */
const char *kvf_errname(int err);

/* Maps an errno value (positive) to the closest KVF_E_* code. */
int kvf_err_from_errno(int errnum);

/*
 * Records a detailed message for the calling thread and returns err, so a
 * failure site reads: return kvf_errf(KVF_E_CONFIG, "%s:%d: ...", file, line);
 */
int kvf_errf(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int kvf_verrf(int err, const char *fmt, va_list ap);

/*
 * The calling thread's last detailed message, or kvf_strerror() of the last
 * code recorded when no detail was given. Valid until the next kvf_errf() on
 * this thread.
 */
const char *kvf_errmsg(void);

/* Forgets the calling thread's last message. */
void kvf_err_clear(void);

#endif
