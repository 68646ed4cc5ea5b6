/*
 * Fuzz target: OpenAI request bodies. The first byte picks the endpoint; the
 * rest is the body. Accepted requests must satisfy every invariant the
 * workers rely on, and writing a response for them must give valid JSON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_json.h"
#include "common/kvf_openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	kvf_oai_kind kind = (data[0] & 1) ? KVF_OAI_CHAT : KVF_OAI_COMPLETION;
	kvf_oai_request r;
	if (kvf_oai_parse(kind, (const char *)data + 1, size - 1, &r) != 0)
		return 0;
	if (!r.model || (kind == KVF_OAI_COMPLETION && !r.prompt == !r.prompt_ids) ||
	    (kind == KVF_OAI_CHAT && !json_is_array(r.messages)) || r.n_stop > KVF_OAI_MAX_STOP ||
	    r.top_logprobs < 0 || r.top_logprobs > KVF_OAI_MAX_TOP_LOGPROBS || r.temperature < 0 ||
	    r.temperature > 2 || r.top_p <= 0 || r.top_p > 1 || (r.max_tokens != -1 && r.max_tokens < 1))
		abort();
	kvf_oai_resp resp = { kind, "id-1", r.model, 1 };
	kvf_oai_usage u = { 1, 1, 0 };
	kvf_buf b = KVF_BUF_INIT;
	const char *text = r.prompt ? r.prompt : "x";
	kvf_oai_write_response(&b, &resp, text, strlen(text), "stop", NULL, 0, NULL, 0, NULL, 0, &u);
	json_t *v = json_loadb(b.data, b.len, 0, NULL);
	if (!v)
		abort(); /* model names and prompts of any bytes must stay valid JSON */
	json_decref(v);
	kvf_buf_free(&b);
	kvf_oai_request_free(&r);
	return 0;
}
