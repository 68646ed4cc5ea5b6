/* base64.c: strict RFC 4648 base64, table-driven. */
#include "common/kvf_base64.h"

#include <stdint.h>

#include "common/kvf_err.h"

static const char enc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int kvf_base64_encode(const void *data, size_t len, kvf_buf *out)
{
	const uint8_t *p = data;
	char *dst = kvf_buf_space(out, (len + 2) / 3 * 4);
	if (!dst)
		return KVF_E_NOMEM;
	size_t o = 0, i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		dst[o++] = enc[v >> 18];
		dst[o++] = enc[(v >> 12) & 63];
		dst[o++] = enc[(v >> 6) & 63];
		dst[o++] = enc[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
		dst[o++] = enc[v >> 18];
		dst[o++] = enc[(v >> 12) & 63];
		dst[o++] = i + 1 < len ? enc[(v >> 6) & 63] : '=';
		dst[o++] = '=';
	}
	kvf_buf_commit(out, o);
	return 0;
}

static int dec(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int kvf_base64_decode(const char *text, size_t len, kvf_buf *out)
{
	if (len % 4)
		return kvf_errf(KVF_E_PARSE, "base64: length %zu is not a multiple of 4", len);
	char *dst = kvf_buf_space(out, len / 4 * 3);
	if (!dst)
		return KVF_E_NOMEM;
	size_t o = 0;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			char c = text[i + k];
			if (c == '=' && i + 4 == len && k >= 2 && (k == 3 || text[i + 3] == '=')) {
				v[k] = 0;
				pad++;
				continue;
			}
			if ((v[k] = dec(c)) < 0 || pad)
				return kvf_errf(KVF_E_PARSE, "base64: bad character at offset %zu", i + (size_t)k);
		}
		uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		dst[o++] = (char)(x >> 16);
		if (pad < 2)
			dst[o++] = (char)(x >> 8);
		if (pad < 1)
			dst[o++] = (char)x;
		/* canonical form: the bits under the padding are zero */
		if ((pad == 1 && (x & 0xff)) || (pad == 2 && (x & 0xffff)))
			return kvf_errf(KVF_E_PARSE, "base64: non-canonical padding at offset %zu", i);
	}
	kvf_buf_commit(out, o);
	return 0;
}
