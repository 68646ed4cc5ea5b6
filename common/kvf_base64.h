/*
 * kvf_base64.h: RFC 4648 base64 (standard alphabet, padded) for binary
 * blobs carried in JSON (fabric descriptors in the P/D protocol).
 */
#ifndef KVF_BASE64_H
#define KVF_BASE64_H

#include <stddef.h>

#include "common/kvf_buf.h"

/* Appends the encoding of len bytes to out. */
int kvf_base64_encode(const void *data, size_t len, kvf_buf *out);

/* Appends the decoded bytes of text[0..len) to out. Strict: padding
 * required, no whitespace; KVF_E_PARSE names the first bad offset. */
int kvf_base64_decode(const char *text, size_t len, kvf_buf *out);

#endif
