/*
 * Unit tests for cachedir/proto.c: the golden bytes printed in
 * docs/protocol-cachedir.md, a decode/re-encode round trip of every message
 * type, and each validation rule of the decoder.
 */
#include "cachedir/cd_proto.h"
#include "common/kvf_err.h"
#include "common/kvf_frame.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

/* Decodes the single frame in w. */
static int decode1(const kvf_wire_writer *w, cd_msg *m, uint32_t max_keys)
{
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 1);
	kvf_frame_hdr h;
	int rc = kvf_frame_hdr_decode(&d, w->buf, w->len, &h);
	if (rc)
		return rc;
	assert_int_equal(w->len, KVF_FRAME_HDR_LEN + h.len);
	kvf_frame f = { h, w->buf + KVF_FRAME_HDR_LEN };
	return cd_proto_decode(&f, max_keys, m);
}

static void roundtrip(kvf_wire_writer *w, uint8_t type)
{
	static cd_msg m;
	assert_int_equal(decode1(w, &m, 0), 0);
	assert_int_equal(m.hdr.type, type);
	kvf_wire_writer again;
	kvf_wire_writer_init(&again, 0);
	assert_int_equal(cd_proto_encode(&again, &m), 0);
	assert_int_equal(again.len, w->len);
	assert_memory_equal(again.buf, w->buf, w->len);
	kvf_wire_writer_free(&again);
	kvf_wire_writer_reset(w);
}

static void test_golden_bytes(void **state)
{
	(void)state;
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	cd_enc_empty(&w, CD_PING, 2);
	static const uint8_t ping[] = { 0x4b, 0x46, 0x01, 0x03, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0 };
	assert_int_equal(w.len, sizeof(ping));
	assert_memory_equal(w.buf, ping, sizeof(ping));
	kvf_wire_writer_reset(&w);

	kvf_blockkey k = { 0x0102030405060708ull, 0x1112131415161718ull };
	cd_enc_lookup(&w, 9, "m", &k, 1);
	static const uint8_t lookup[] = {
		0x4b, 0x46, 0x01, 0x20, 0, 0, 0, 0, 0x09, 0, 0, 0, 0x1a, 0, 0, 0, /* header */
		0x01, 0, 0, 0, 'm',                                               /* model */
		0x00,                                                             /* flags */
		0x01, 0, 0, 0,                                                    /* n */
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,                   /* lo */
		0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,                   /* hi */
	};
	assert_int_equal(w.len, sizeof(lookup));
	assert_memory_equal(w.buf, lookup, sizeof(lookup));
	kvf_wire_writer_reset(&w);

	cd_enc_stored(&w, 5, CD_TIER_HOST, NULL, &k, 1);
	static const uint8_t stored[] = {
		0x4b, 0x46, 0x01, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0x1e, 0, 0, 0, /* header */
		0x05, 0, 0, 0, 0, 0, 0, 0,                                     /* seq */
		0x01,                                                          /* tier host */
		0x00,                                                          /* flags */
		0x01, 0, 0, 0,                                                 /* n */
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
		0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,
	};
	assert_int_equal(w.len, sizeof(stored));
	assert_memory_equal(w.buf, stored, sizeof(stored));
	kvf_wire_writer_free(&w);
}

static void test_roundtrip_every_type(void **state)
{
	(void)state;
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	kvf_blockkey keys[5];
	for (int i = 0; i < 5; i++)
		keys[i] = (kvf_blockkey){ (uint64_t)i * 77 + 1, (uint64_t)i };
	cd_register r;
	memset(&r, 0, sizeof(r));
	strcpy(r.worker_id, "decode-0");
	strcpy(r.model, "llama");
	r.role = CD_ROLE_BOTH;
	r.block_size = 16;
	r.epoch = 3;
	r.last_seq = 9;
	r.tiers = 5;
	r.capacity[2] = 7;
	strcpy(r.http, "10.0.0.1:8200");
	cd_worker_info wi;
	memset(&wi, 0, sizeof(wi));
	strcpy(wi.worker_id, "w");
	wi.role = 1;
	strcpy(wi.model, "m");
	wi.block_size = 32;
	wi.state = CD_WS_DRAINING;
	wi.tiers = 1;
	wi.load.flags = CD_LOAD_DRAINING;
	wi.blocks[1] = 4;

	cd_enc_error(&w, 3, KVF_E_NOTFOUND, 0, "nope");
	roundtrip(&w, CD_ERROR);
	cd_enc_empty(&w, CD_OK, 1);
	roundtrip(&w, CD_OK);
	cd_enc_empty(&w, CD_PONG, 1);
	roundtrip(&w, CD_PONG);
	cd_enc_register(&w, 4, &r);
	roundtrip(&w, CD_REGISTER);
	cd_registered rg = { 100, 500, 42, 1 };
	cd_enc_registered(&w, 4, &rg);
	roundtrip(&w, CD_REGISTERED);
	cd_heartbeat hb = { 8, { 1, 2, 3, 4, CD_LOAD_DRAINING } };
	cd_enc_heartbeat(&w, 0, &hb);
	roundtrip(&w, CD_HEARTBEAT);
	cd_heartbeat_ack ack = { 8, 2 };
	cd_enc_heartbeat_ack(&w, 0, &ack);
	roundtrip(&w, CD_HEARTBEAT_ACK);
	cd_enc_stored(&w, 1, 2, &keys[0], keys + 1, 4);
	roundtrip(&w, CD_STORED);
	cd_enc_removed(&w, 2, CD_TIER_ALL, keys, 5);
	roundtrip(&w, CD_REMOVED);
	cd_enc_seqmsg(&w, CD_CLEARED, 0, 3);
	roundtrip(&w, CD_CLEARED);
	cd_enc_seqmsg(&w, CD_SYNC_BEGIN, 0, 4);
	roundtrip(&w, CD_SYNC_BEGIN);
	cd_enc_seqmsg(&w, CD_SYNC_END, 6, 5);
	roundtrip(&w, CD_SYNC_END);
	cd_synced sy = { 5, 10, 1 };
	cd_enc_synced(&w, 6, &sy);
	roundtrip(&w, CD_SYNCED);
	cd_resync rs = { 2, 3, "gap" };
	cd_enc_resync(&w, &rs);
	roundtrip(&w, CD_RESYNC);
	cd_enc_lookup(&w, 7, "llama", keys, 5);
	roundtrip(&w, CD_LOOKUP);
	cd_list_frame lf;
	cd_lookup_reply_begin(&w, 7, 5, 3, CD_LOOKUP_WARMING, &lf);
	uint32_t p[3] = { 1, 2, 3 };
	cd_put_holder(&w, "a", CD_WS_ACTIVE, p);
	cd_put_holder(&w, "b", CD_WS_DRAINING, p);
	cd_list_end(&w, &lf, 2);
	roundtrip(&w, CD_LOOKUP_REPLY);
	cd_enc_workers(&w, 8, "");
	roundtrip(&w, CD_WORKERS);
	cd_workers_reply_begin(&w, 8, &lf);
	cd_put_worker_info(&w, &wi);
	cd_list_end(&w, &lf, 1);
	roundtrip(&w, CD_WORKERS_REPLY);
	cd_enc_watch(&w, 9, CD_WATCH_BLOCKS, "llama");
	roundtrip(&w, CD_WATCH);
	cd_enc_ev_snapshot(&w, 9, 1, CD_EV_SNAPSHOT_BEGIN, 42, CD_SNAP_NEW);
	roundtrip(&w, CD_WATCH_EVENT);
	cd_enc_ev_snapshot(&w, 9, 2, CD_EV_SNAPSHOT_END, 0, 0);
	roundtrip(&w, CD_WATCH_EVENT);
	cd_enc_ev_worker(&w, 9, 3, &wi);
	roundtrip(&w, CD_WATCH_EVENT);
	cd_enc_ev_gone(&w, 9, 4, "w", CD_GONE_REPLACED);
	roundtrip(&w, CD_WATCH_EVENT);
	cd_enc_ev_blocks(&w, 9, 5, CD_EV_STORED, "w", 1, &keys[0], keys + 1, 2);
	roundtrip(&w, CD_WATCH_EVENT);
	cd_enc_ev_blocks(&w, 9, 6, CD_EV_REMOVED, "w", CD_TIER_ALL, NULL, keys, 3);
	roundtrip(&w, CD_WATCH_EVENT);
	cd_enc_ev_cleared(&w, 9, 7, "w");
	roundtrip(&w, CD_WATCH_EVENT);
	kvf_wire_writer_free(&w);
}

/* Encodes a frame of type with payload p[0..n) and checks the decoder's verdict. */
static void refuse(uint8_t type, const void *p, size_t n, int code, const char *needle)
{
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	size_t s;
	kvf_frame_begin(&w, &(kvf_frame_hdr){ .version = 1, .type = type }, &s);
	kvf_wire_put_bytes(&w, p, n);
	kvf_frame_end(&w, s);
	cd_msg m;
	assert_int_equal(decode1(&w, &m, 4), code);
	if (needle && !strstr(kvf_errmsg(), needle))
		fail_msg("'%s' not in '%s'", needle, kvf_errmsg());
	kvf_wire_writer_free(&w);
}

static void test_decoder_rules(void **state)
{
	(void)state;
	refuse(0x7e, "", 0, KVF_E_UNSUPPORTED, "unknown message type 0x7e");
	refuse(CD_PING, "x", 1, KVF_E_PROTO, "too long");
	refuse(CD_CLEARED, "1234", 4, KVF_E_PROTO, "truncated");
	/* STORED: tier 3 */
	static const uint8_t st_tier[] = { 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0 };
	refuse(CD_STORED, st_tier, sizeof(st_tier), KVF_E_PROTO, "bad tier");
	static const uint8_t st_flags[] = { 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0 };
	refuse(CD_STORED, st_flags, sizeof(st_flags), KVF_E_PROTO, "unknown STORED flags");
	/* 5 keys over the limit of 4 */
	static const uint8_t st_many[] = { 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0 };
	refuse(CD_STORED, st_many, sizeof(st_many), KVF_E_TOOBIG, "5 keys, more than the 4 allowed");
	/* count says 1 key, none follows */
	static const uint8_t st_short[] = { 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 };
	refuse(CD_STORED, st_short, sizeof(st_short), KVF_E_PROTO, NULL);
	/* REMOVED tier 0xff is fine, 0xfe is not */
	static const uint8_t rm_all[] = { 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0 };
	cd_msg m;
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	size_t s;
	kvf_frame_begin(&w, &(kvf_frame_hdr){ .version = 1, .type = CD_REMOVED }, &s);
	kvf_wire_put_bytes(&w, rm_all, sizeof(rm_all));
	kvf_frame_end(&w, s);
	assert_int_equal(decode1(&w, &m, 0), 0);
	assert_int_equal(m.u.removed.tier, CD_TIER_ALL);
	kvf_wire_writer_free(&w);
	static const uint8_t rm_bad[] = { 1, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0, 0, 0, 0 };
	refuse(CD_REMOVED, rm_bad, sizeof(rm_bad), KVF_E_PROTO, "bad tier");
	/* LOOKUP: empty model, nonzero flags */
	static const uint8_t lk_empty[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0 };
	refuse(CD_LOOKUP, lk_empty, sizeof(lk_empty), KVF_E_PROTO, "bad model");
	static const uint8_t lk_flags[] = { 1, 0, 0, 0, 'm', 1, 0, 0, 0, 0 };
	refuse(CD_LOOKUP, lk_flags, sizeof(lk_flags), KVF_E_PROTO, "unknown LOOKUP flags");
	/* a string with a NUL inside */
	static const uint8_t lk_nul[] = { 2, 0, 0, 0, 'm', 0, 0, 0, 0, 0, 0 };
	refuse(CD_LOOKUP, lk_nul, sizeof(lk_nul), KVF_E_PROTO, "bad model");
	/* WATCH flags 0 and unknown bits */
	static const uint8_t wa0[] = { 0, 0, 0, 0, 0 };
	refuse(CD_WATCH, wa0, sizeof(wa0), KVF_E_PROTO, "bad WATCH flags");
	static const uint8_t wa8[] = { 8, 0, 0, 0, 0 };
	refuse(CD_WATCH, wa8, sizeof(wa8), KVF_E_PROTO, "bad WATCH flags");
	/* ERROR with a non-negative code */
	static const uint8_t er[] = { 1, 0, 0, 0, 0, 0, 0, 0, 0 };
	refuse(CD_ERROR, er, sizeof(er), KVF_E_PROTO, "bad error code");
	/* REGISTERED with lease < heartbeat */
	static const uint8_t rg[] = { 100, 0, 0, 0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
	refuse(CD_REGISTERED, rg, sizeof(rg), KVF_E_PROTO, "bad lease timing");
	/* a worker id longer than 128 bytes */
	uint8_t reg[4 + 129];
	reg[0] = 129;
	reg[1] = reg[2] = reg[3] = 0;
	memset(reg + 4, 'a', 129);
	refuse(CD_REGISTER, reg, sizeof(reg), KVF_E_PROTO, "bad worker id");
	/* unknown watch event kind */
	static const uint8_t ev[] = { 1, 0, 0, 0, 0, 0, 0, 0, 9 };
	refuse(CD_WATCH_EVENT, ev, sizeof(ev), KVF_E_PROTO, "unknown watch event kind");
	/* LOOKUP_REPLY: prefix lengths out of order, nmatched > nkeys */
	kvf_wire_writer_init(&w, 0);
	cd_list_frame lf;
	cd_lookup_reply_begin(&w, 1, 3, 3, 0, &lf);
	uint32_t p[3] = { 2, 1, 3 };
	cd_put_holder(&w, "x", 1, p);
	cd_list_end(&w, &lf, 1);
	assert_int_equal(decode1(&w, &m, 0), KVF_E_PROTO);
	assert_non_null(strstr(kvf_errmsg(), "bad prefix lengths"));
	kvf_wire_writer_reset(&w);
	cd_lookup_reply_begin(&w, 1, 3, 4, 0, &lf);
	cd_list_end(&w, &lf, 0);
	assert_int_equal(decode1(&w, &m, 0), KVF_E_PROTO);
	kvf_wire_writer_reset(&w);
	/* a list count larger than its records */
	cd_workers_reply_begin(&w, 1, &lf);
	cd_list_end(&w, &lf, 2);
	assert_int_equal(decode1(&w, &m, 0), KVF_E_PROTO);
	kvf_wire_writer_free(&w);
	/* nonzero frame flags */
	kvf_wire_writer_init(&w, 0);
	kvf_frame_begin(&w, &(kvf_frame_hdr){ .version = 1, .type = CD_PING, .flags = 4 }, &s);
	kvf_frame_end(&w, s);
	assert_int_equal(decode1(&w, &m, 0), KVF_E_PROTO);
	assert_non_null(strstr(kvf_errmsg(), "flags"));
	kvf_wire_writer_free(&w);
}

static void test_error_message_bound(void **state)
{
	(void)state;
	char big[3000];
	memset(big, 'e', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	cd_enc_error(&w, 1, KVF_E_INVAL, 1, big);
	cd_msg m;
	assert_int_equal(decode1(&w, &m, 0), 0);
	assert_int_equal(strlen(m.u.error.msg), CD_MSG_MAX);
	assert_int_equal(m.u.error.fatal, 1);
	kvf_wire_writer_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_bytes),
		cmocka_unit_test(test_roundtrip_every_type),
		cmocka_unit_test(test_decoder_rules),
		cmocka_unit_test(test_error_message_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
