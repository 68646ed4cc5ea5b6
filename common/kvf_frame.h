/*
 * kvf_frame.h: framing for kvfabric's binary protocols (the cachedir protocol,
 * the fabric's TCP transport). Wire format in docs/protocol-framing.md:
 *
 *   0      2        3     4       6          8           12          16
 *   | 'K' 'F' | version | type | flags | reserved=0 | request_id | length | payload...
 *
 * all little-endian, length = payload bytes. Three layers:
 *   - kvf_frame_hdr_encode()/_decode(): one header, strictly checked against a
 *     kvf_frame_decoder (accepted versions, max frame size);
 *   - kvf_frame_reader: a stream reassembler fed arbitrary chunks (or read()
 *     into directly) that yields whole frames as views into its buffer, with no
 *     per-frame allocation: the buffer grows once up to the max frame size;
 *   - kvf_frame_begin()/_end(): build a frame in a kvf_wire_writer, the payload
 *     written with the kvf_wire.h codec in between.
 * A decoding error is fatal for a stream (framing is lost): close the
 * connection after answering if the protocol allows.
 */
#ifndef KVF_FRAME_H
#define KVF_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_wire.h"

#define KVF_FRAME_HDR_LEN 16
#define KVF_FRAME_MAGIC0 'K'
#define KVF_FRAME_MAGIC1 'F'
/* Default limit on a whole frame, header included. */
#define KVF_FRAME_MAX_DEFAULT (16u << 20)

typedef struct kvf_frame_hdr {
	uint8_t version;     /* the carried protocol's version */
	uint8_t type;        /* message type, defined by the protocol */
	uint16_t flags;      /* defined by the protocol */
	uint32_t request_id; /* echoed in replies; 0 for unsolicited messages */
	uint32_t len;        /* payload bytes following the header */
} kvf_frame_hdr;

/* What a decoder accepts. Fill with kvf_frame_decoder_init(), then adjust. */
typedef struct kvf_frame_decoder {
	uint8_t min_version, max_version; /* accepted range, inclusive */
	uint32_t max_frame;               /* header + payload, >= KVF_FRAME_HDR_LEN */
} kvf_frame_decoder;

/* A complete frame; payload is hdr.len bytes borrowed from the reader. */
typedef struct kvf_frame {
	kvf_frame_hdr hdr;
	const uint8_t *payload;
} kvf_frame;

/* Accepts versions [min_version, max_version], frames up to KVF_FRAME_MAX_DEFAULT. */
void kvf_frame_decoder_init(kvf_frame_decoder *d, uint8_t min_version, uint8_t max_version);

/* Writes the 16-byte header for h (reserved bytes 0). */
void kvf_frame_hdr_encode(const kvf_frame_hdr *h, uint8_t out[KVF_FRAME_HDR_LEN]);

/*
 * Decodes the header at the start of buf[0..len). Every field is checked as
 * soon as its bytes are present, so garbage is refused before 16 bytes arrive.
 * Returns 0 and *out; KVF_E_AGAIN when len < 16 and the bytes so far are
 * valid; KVF_E_PROTO (bad magic, nonzero reserved), KVF_E_VERSION (version
 * outside the decoder's range), KVF_E_TOOBIG (16 + length > max_frame), each
 * with a kvf_errmsg() detail.
 */
int kvf_frame_hdr_decode(const kvf_frame_decoder *d, const void *buf, size_t len,
			 kvf_frame_hdr *out);

/* ---- stream reassembler ---- */

typedef struct kvf_frame_reader kvf_frame_reader;

/*
 * A reader enforcing *d (copied). Returns 0 and *out, KVF_E_INVAL for a
 * decoder with max_frame < 16 or min_version > max_version, KVF_E_NOMEM.
 */
int kvf_frame_reader_new(const kvf_frame_decoder *d, kvf_frame_reader **out);

/* Frees a reader; NULL is a no-op. */
void kvf_frame_reader_free(kvf_frame_reader *r);

/*
 * Room to read() into: sets *buf and *avail (> 0 unless complete frames are
 * waiting: take them with _next() first). Invalidates payload views returned
 * earlier. Returns 0, KVF_E_NOMEM, or the stream's sticky decoding error.
 */
int kvf_frame_reader_space(kvf_frame_reader *r, void **buf, size_t *avail);

/* Records that n bytes (<= avail) were written at the space buffer. */
void kvf_frame_reader_commit(kvf_frame_reader *r, size_t n);

/*
 * Copies as much of data[0..len) as fits and sets *taken; feed the rest after
 * taking frames with _next(). Invalidates earlier payload views. Returns 0 or
 * what _space() returns.
 */
int kvf_frame_reader_feed(kvf_frame_reader *r, const void *data, size_t len, size_t *taken);

/*
 * The next complete frame: 0 and *out (payload valid until the next _space,
 * _feed or _free); KVF_E_AGAIN when more bytes are needed; otherwise the
 * decoding error, which is sticky: every later call returns it.
 */
int kvf_frame_reader_next(kvf_frame_reader *r, kvf_frame *out);

/* Bytes buffered that no returned frame covers (nonzero at EOF = truncated). */
size_t kvf_frame_reader_pending(const kvf_frame_reader *r);

/* ---- building frames ---- */

/*
 * Appends a header for h (its len ignored) to w and sets *start to its
 * offset; write the payload with kvf_wire_put_*(), then call _end().
 */
void kvf_frame_begin(kvf_wire_writer *w, const kvf_frame_hdr *h, size_t *start);

/*
 * Patches the length of the frame begun at start. Returns 0, the writer's
 * sticky error, or KVF_E_TOOBIG when the payload exceeds UINT32_MAX.
 */
int kvf_frame_end(kvf_wire_writer *w, size_t start);

#endif
