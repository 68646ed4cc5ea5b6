/* Unit tests for common/openai.c: request fixtures and response shapes. */
#include "common/kvf_err.h"
#include "common/kvf_json.h"
#include "common/kvf_openai.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#ifndef KVF_ROOT_DIR
#define KVF_ROOT_DIR "."
#endif

static void check_expect(const char *name, const kvf_oai_request *r, const json_t *expect)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)expect, key, v) {
		if (strcmp(key, "model") == 0)
			assert_string_equal(r->model, json_string_value(v));
		else if (strcmp(key, "prompt") == 0)
			assert_string_equal(r->prompt, json_string_value(v));
		else if (strcmp(key, "prompt_ids") == 0) {
			assert_int_equal(r->n_prompt_ids, json_array_size(v));
			for (size_t i = 0; i < r->n_prompt_ids; i++)
				assert_int_equal(r->prompt_ids[i], json_integer_value(json_array_get(v, i)));
		} else if (strcmp(key, "max_tokens") == 0)
			assert_int_equal(r->max_tokens, json_integer_value(v));
		else if (strcmp(key, "temperature") == 0)
			assert_true(r->temperature == json_number_value(v));
		else if (strcmp(key, "top_p") == 0)
			assert_true(r->top_p == json_number_value(v));
		else if (strcmp(key, "top_k") == 0)
			assert_int_equal(r->top_k, json_integer_value(v));
		else if (strcmp(key, "stream") == 0)
			assert_int_equal(r->stream, json_is_true(v));
		else if (strcmp(key, "include_usage") == 0)
			assert_int_equal(r->include_usage, json_is_true(v));
		else if (strcmp(key, "has_seed") == 0)
			assert_int_equal(r->has_seed, json_is_true(v));
		else if (strcmp(key, "seed") == 0)
			assert_int_equal(r->seed, json_integer_value(v));
		else if (strcmp(key, "logprobs") == 0)
			assert_int_equal(r->logprobs, json_is_true(v));
		else if (strcmp(key, "top_logprobs") == 0)
			assert_int_equal(r->top_logprobs, json_integer_value(v));
		else if (strcmp(key, "n_stop") == 0)
			assert_int_equal(r->n_stop, json_integer_value(v));
		else if (strcmp(key, "n_stop_token_ids") == 0)
			assert_int_equal(r->n_stop_token_ids, json_integer_value(v));
		else if (strcmp(key, "ignore_eos") == 0)
			assert_int_equal(r->ignore_eos, json_is_true(v));
		else if (strcmp(key, "return_token_ids") == 0)
			assert_int_equal(r->return_token_ids, json_is_true(v));
		else if (strcmp(key, "add_generation_prompt") == 0)
			assert_int_equal(r->add_generation_prompt, json_is_true(v));
		else if (strcmp(key, "n_messages") == 0)
			assert_int_equal(json_array_size(r->messages), json_integer_value(v));
		else
			fail_msg("%s: unknown expectation '%s'", name, key);
	}
}

static void test_request_fixtures(void **state)
{
	json_error_t jerr;
	json_t *doc = json_load_file(KVF_ROOT_DIR "/tests/data/openai/requests.json", 0, &jerr);
	if (!doc)
		fail_msg("fixtures: %s", jerr.text);
	json_t *cases = json_object_get(doc, "cases");
	assert_true(json_array_size(cases) >= 30);
	size_t i;
	json_t *c;
	json_array_foreach(cases, i, c) {
		const char *name = json_string_value(json_object_get(c, "name"));
		kvf_oai_kind kind = strcmp(json_string_value(json_object_get(c, "endpoint")), "chat") == 0
					    ? KVF_OAI_CHAT : KVF_OAI_COMPLETION;
		kvf_buf body = KVF_BUF_INIT;
		assert_int_equal(kvf_json_dump(json_object_get(c, "body"), &body), 0);
		kvf_oai_request r;
		int rc = kvf_oai_parse(kind, body.data, body.len, &r);
		kvf_buf_free(&body);
		if (json_is_true(json_object_get(c, "ok"))) {
			if (rc != 0)
				fail_msg("%s: rejected: %s", name, kvf_errmsg());
			check_expect(name, &r, json_object_get(c, "expect"));
			kvf_oai_request_free(&r);
		} else {
			if (rc == 0)
				fail_msg("%s: accepted", name);
			const char *param = json_string_value(json_object_get(c, "param"));
			if (strcmp(kvf_json_bad_param(), param) != 0)
				fail_msg("%s: param '%s', want '%s' (%s)", name, kvf_json_bad_param(), param, kvf_errmsg());
		}
	}
	json_decref(doc);
	kvf_oai_request_free(NULL);
}

static void test_not_json(void **state)
{
	kvf_oai_request r;
	assert_int_equal(kvf_oai_parse(KVF_OAI_CHAT, "{\"model\":", 9, &r), KVF_E_PARSE);
	assert_int_equal(kvf_oai_parse(KVF_OAI_CHAT, "[]", 2, &r), KVF_E_PARSE);
}

static void test_message_text(void **state)
{
	json_t *m = json_loads("{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
			       "{\"type\":\"text\",\"text\":\"b\"}]}", 0, NULL);
	json_t *t = kvf_oai_message_text(m);
	assert_string_equal(json_string_value(t), "a\nb");
	json_decref(t);
	json_t *msgs = json_pack("[O]", m);
	json_t *flat = kvf_oai_messages_flat(msgs);
	assert_string_equal(json_string_value(json_object_get(json_array_get(flat, 0), "content")), "a\nb");
	assert_true(json_is_array(json_object_get(m, "content"))); /* the original is untouched */
	json_decref(flat);
	json_decref(msgs);
	json_decref(m);
}

static json_t *parse_out(kvf_buf *b)
{
	json_t *v = NULL;
	if (kvf_json_parse_object(b->data, b->len, &v) != 0)
		fail_msg("writer produced invalid JSON: %s: %s", kvf_errmsg(), b->data);
	return v;
}

static void test_write_completion(void **state)
{
	kvf_oai_resp r = { KVF_OAI_COMPLETION, "cmpl-1", "tiny", 1700000000 };
	kvf_oai_logprob lp[2] = { { "Hel", -0.5f, 2, { "Hel", "He" }, { -0.5f, -1.5f } },
				  { "lo\"", -INFINITY, 0, { 0 }, { 0 } } };
	kvf_oai_usage u = { 5, 2, 3 };
	uint32_t ids[2] = { 10, 11 }, pids[1] = { 1 };
	kvf_buf b = KVF_BUF_INIT;
	assert_int_equal(kvf_oai_write_response(&b, &r, "Hello\"", 6, "length", lp, 2, ids, 2, pids, 1, &u), 0);
	json_t *v = parse_out(&b);
	assert_string_equal(json_string_value(json_object_get(v, "object")), "text_completion");
	json_t *ch = json_array_get(json_object_get(v, "choices"), 0);
	assert_string_equal(json_string_value(json_object_get(ch, "text")), "Hello\"");
	assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "length");
	json_t *l = json_object_get(ch, "logprobs");
	assert_true(json_number_value(json_array_get(json_object_get(l, "token_logprobs"), 1)) == -9999.0);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(l, "text_offset"), 1)), 3);
	assert_true(json_real_value(json_object_get(json_array_get(json_object_get(l, "top_logprobs"), 0), "He")) == -1.5);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(ch, "token_ids"), 1)), 11);
	json_t *usage = json_object_get(v, "usage");
	assert_int_equal(json_integer_value(json_object_get(usage, "total_tokens")), 7);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(usage, "prompt_tokens_details"), "cached_tokens")), 3);
	json_decref(v);
	kvf_buf_free(&b);
}

static void test_write_chat_and_chunks(void **state)
{
	kvf_oai_resp r = { KVF_OAI_CHAT, "chatcmpl-1", "tiny", 1700000000 };
	kvf_oai_logprob lp[1] = { { "é", -0.25f, 1, { "e" }, { -2.0f } } };
	kvf_oai_usage u = { 4, 1, 0 };
	kvf_buf b = KVF_BUF_INIT;
	assert_int_equal(kvf_oai_write_response(&b, &r, "é", strlen("é"), "stop", lp, 1, NULL, 0, NULL, 0, &u), 0);
	json_t *v = parse_out(&b);
	assert_string_equal(json_string_value(json_object_get(v, "object")), "chat.completion");
	json_t *ch = json_array_get(json_object_get(v, "choices"), 0);
	assert_string_equal(json_string_value(json_object_get(json_object_get(ch, "message"), "role")), "assistant");
	json_t *c0 = json_array_get(json_object_get(json_object_get(ch, "logprobs"), "content"), 0);
	assert_int_equal(json_array_size(json_object_get(c0, "bytes")), 2); /* UTF-8 bytes of é */
	assert_null(json_object_get(ch, "token_ids"));
	json_decref(v);

	kvf_buf_reset(&b);
	assert_int_equal(kvf_oai_write_chunk(&b, &r, 1, "Hi", 2, NULL, NULL, 0, NULL, 0), 0);
	v = parse_out(&b);
	assert_string_equal(json_string_value(json_object_get(v, "object")), "chat.completion.chunk");
	ch = json_array_get(json_object_get(v, "choices"), 0);
	assert_string_equal(json_string_value(json_object_get(json_object_get(ch, "delta"), "role")), "assistant");
	assert_true(json_is_null(json_object_get(ch, "finish_reason")));
	json_decref(v);

	kvf_buf_reset(&b);
	assert_int_equal(kvf_oai_write_chunk(&b, &r, 0, "", 0, "stop", NULL, 0, NULL, 0), 0);
	v = parse_out(&b);
	ch = json_array_get(json_object_get(v, "choices"), 0);
	assert_null(json_object_get(json_object_get(ch, "delta"), "role"));
	assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "stop");
	json_decref(v);

	kvf_buf_reset(&b);
	assert_int_equal(kvf_oai_write_usage_chunk(&b, &r, &u), 0);
	v = parse_out(&b);
	assert_int_equal(json_array_size(json_object_get(v, "choices")), 0);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "usage"), "completion_tokens")), 1);
	json_decref(v);

	kvf_buf_reset(&b);
	const char *models[] = { "a", "b" };
	assert_int_equal(kvf_oai_write_models(&b, models, 2, 1, NULL), 0);
	v = parse_out(&b);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(v, "data"), 1), "id")), "b");
	json_decref(v);
	kvf_buf_free(&b);
}

static void test_ids(void **state)
{
	char a[40], b[40];
	kvf_oai_make_id(KVF_OAI_CHAT, a);
	kvf_oai_make_id(KVF_OAI_CHAT, b);
	assert_memory_equal(a, "chatcmpl-", 9);
	assert_int_equal(strlen(a), 9 + 24);
	assert_string_not_equal(a, b);
	kvf_oai_make_id(KVF_OAI_COMPLETION, a);
	assert_memory_equal(a, "cmpl-", 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_fixtures),
		cmocka_unit_test(test_not_json),
		cmocka_unit_test(test_message_text),
		cmocka_unit_test(test_write_completion),
		cmocka_unit_test(test_write_chat_and_chunks),
		cmocka_unit_test(test_ids),
	};
	return cmocka_run_group_tests_name("openai", tests, NULL, NULL);
}
