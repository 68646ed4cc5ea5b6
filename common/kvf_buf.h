/*
 * kvf_buf.h: a growable byte buffer for building messages (HTTP responses,
 * admin replies, metric exposition) and holding partial input.
 *
 * An allocation failure is sticky: the buffer records it, later appends are
 * no-ops returning KVF_E_NOMEM, and the writer checks once at the end.
 * Not thread-safe; a buffer belongs to one connection or one call.
 */
#ifndef KVF_BUF_H
#define KVF_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct kvf_buf {
	char *data;   /* always NUL-terminated when len > 0 or after any append */
	size_t len;   /* bytes used */
	size_t cap;   /* bytes allocated */
	size_t off;   /* bytes already consumed from the front (see kvf_buf_consume) */
	int oom;      /* sticky allocation failure */
} kvf_buf;

#define KVF_BUF_INIT { NULL, 0, 0, 0, 0 }

void kvf_buf_init(kvf_buf *b);
void kvf_buf_free(kvf_buf *b);
/* Forgets the content, keeps the memory. Clears the oom flag. */
void kvf_buf_reset(kvf_buf *b);
/* Ensures room for `extra` more bytes (plus a terminating NUL). */
int kvf_buf_reserve(kvf_buf *b, size_t extra);
int kvf_buf_append(kvf_buf *b, const void *data, size_t len);
int kvf_buf_puts(kvf_buf *b, const char *s);
int kvf_buf_putc(kvf_buf *b, char c);
int kvf_buf_printf(kvf_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int kvf_buf_vprintf(kvf_buf *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal with quotes and escapes. */
int kvf_buf_put_json_str(kvf_buf *b, const char *s, size_t len);

/* Unconsumed bytes: kvf_buf_head() .. + kvf_buf_avail(). */
static inline char *kvf_buf_head(const kvf_buf *b) { return b->data + b->off; }
static inline size_t kvf_buf_avail(const kvf_buf *b) { return b->len - b->off; }
/* Drops n bytes from the front (cheap: moves memory only when it pays). */
void kvf_buf_consume(kvf_buf *b, size_t n);
/* Space to read into: returns a pointer with at least `want` bytes free;
 * then kvf_buf_commit(b, n) with the bytes actually written. NULL on oom. */
char *kvf_buf_space(kvf_buf *b, size_t want);
void kvf_buf_commit(kvf_buf *b, size_t n);

#endif
