/*
 * Unit tests for the chat-template interpreter (engine/tokenizer/jinja.c):
 * the Jinja2 semantics that model templates rely on, each expected value being
 * what Python Jinja2 with transformers' settings (trim_blocks, lstrip_blocks)
 * prints, plus the error paths. The model templates themselves are checked
 * against HF references by tests/integration/tokenizer_chat.sh.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/tokenizer/kvf_tokenizer.h"

/* Renders src with the JSON object vars; returns the output (static). */
static const char *render(const char *src, const char *vars)
{
	static char out[8192];
	kvf_chat_template *t;
	if (kvf_chat_template_compile(src, strlen(src), &t) != 0)
		fail_msg("compile failed: %s", kvf_errmsg());
	json_t *v = json_loads(vars ? vars : "{}", 0, NULL);
	assert_non_null(v);
	char *s;
	size_t len;
	int rc = kvf_chat_template_render(t, v, &s, &len);
	json_decref(v);
	kvf_chat_template_destroy(t);
	if (rc)
		fail_msg("render failed: %s", kvf_errmsg());
	assert_true(len < sizeof(out));
	memcpy(out, s, len + 1);
	kvf_free(s);
	return out;
}

/* Expects a failure; returns the error message. */
static const char *render_err(const char *src, const char *vars, int *code)
{
	kvf_chat_template *t;
	int rc = kvf_chat_template_compile(src, strlen(src), &t);
	if (rc) {
		*code = rc;
		return kvf_errmsg();
	}
	json_t *v = json_loads(vars ? vars : "{}", 0, NULL);
	char *s = NULL;
	size_t len;
	rc = kvf_chat_template_render(t, v, &s, &len);
	json_decref(v);
	kvf_chat_template_destroy(t);
	assert_int_not_equal(rc, 0);
	assert_null(s);
	*code = rc;
	return kvf_errmsg();
}

static void test_whitespace_control(void **state)
{
	/* trim_blocks drops the newline after a block tag; lstrip_blocks the indent before it */
	assert_string_equal(render("{% if true %}\nyes\n{% endif %}\nend", NULL), "yes\nend");
	assert_string_equal(render("a\n    {% if true %}\n    b\n    {% endif %}\nc", NULL), "a\n    b\nc");
	/* '-' strips all whitespace on its side, newlines included */
	assert_string_equal(render("a  \n  {{- 'b' -}}  \n  c", NULL), "abc");
	/* expressions keep their newline (trim_blocks is for blocks only) */
	assert_string_equal(render("{{ 'x' }}\ny", NULL), "x\ny");
	/* '+' disables lstrip_blocks */
	assert_string_equal(render("  {%+ if true %}z{% endif %}", NULL), "  z");
	/* comments vanish, with trim_blocks */
	assert_string_equal(render("a{# note #}\nb", NULL), "ab");
	assert_string_equal(render("{% raw %}{{ not }}{% endraw %}", NULL), "{{ not }}");
}

static void test_values_and_operators(void **state)
{
	assert_string_equal(render("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }}", NULL),
			    "7 3 -4 1 2 1024");
	assert_string_equal(render("{{ 7 / 2 }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 3 - 0.5 }}", NULL),
			    "3.5 1.0 0.30000000000000004 1e+20 2.5");
	assert_string_equal(render("{{ none }} {{ true }} {{ False }} {{ [1, 'a', none] }} {{ {'k': 'v'} }}", NULL),
			    "None True False [1, 'a', None] {'k': 'v'}");
	assert_string_equal(render("{{ 'a' ~ 1 ~ none }}|{{ 'ab' * 3 }}|{{ [1] + [2] }}", NULL), "a1None|ababab|[1, 2]");
	assert_string_equal(render("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'b' > 'a' }} {{ 1 == 1.0 }} {{ [1,2] == [1,2] }}", NULL),
			    "True False True True True");
	assert_string_equal(render("{{ 'x' in 'xyz' }} {{ 2 in [1,2] }} {{ 'k' in {'k':1} }} {{ 3 not in [1] }}", NULL),
			    "True True True True");
	assert_string_equal(render("{{ 'y' if false else 'n' }}{{ 'z' if true }}{{ 'w' if false }}", NULL), "nz");
	assert_string_equal(render("{{ not 1 and 2 or 3 }} {{ 0 or '' or 'x' }} {{ 1 and 0 }}", NULL), "3 x 0");
	/* filters bind tighter than + and -: Llama-3's "x | trim + y" */
	assert_string_equal(render("{{ '<' + '  a  ' | trim + '>' }}{{ [1,2,3] | length - 1 }}", NULL), "<a>2");
	/* Jinja's parser applies filters to the negated value */
	assert_string_equal(render("{{ -3 | abs }}", NULL), "3");
}

static void test_strings_and_slices(void **state)
{
	const char *v = "{\"s\": \"<think>\\nwhy\\n</think>\\n\\nanswer\", \"l\": [1, 2, 3, 4]}";
	assert_string_equal(render("{{ s.split('</think>')[-1].lstrip('\\n') }}", v), "answer");
	assert_string_equal(render("{{ s.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}", v),
			    "why");
	assert_string_equal(render("{{ s.startswith('<think>') }} {{ s.endswith('x') }} {{ s.startswith(('a', '<')) }}", v),
			    "True False True");
	assert_string_equal(render("{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ 'a b  c'.split() }}", NULL),
			    "x|hi|['a', 'b', 'c']");
	assert_string_equal(render("{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[-1] }} {{ 'héllo'[1:3] }}", v),
			    "[2, 3, 4] [1, 2, 3] [4, 3, 2, 1] [1, 3] 4 él");
	assert_string_equal(render("{{ 'Hello World'.upper() }} {{ 'ABC'.lower() }} {{ 'hello world'.title() }} "
				   "{{ 'hELLO'.capitalize() }} {{ 'a-b-c'.replace('-', '+') }}",
				   NULL),
			    "HELLO WORLD abc Hello World Hello a+b+c");
	assert_string_equal(render("{{ \"it's\" }} {{ ['it\\'s', 'q\"'] }}", NULL), "it's [\"it's\", 'q\"']");
}

static void test_filters(void **state)
{
	const char *v = "{\"tools\": [{\"name\": \"f\", \"args\": {\"b\": 1, \"a\": [true, null, 1.5]}}],"
			"\"msgs\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"},"
			"{\"role\": \"user\", \"content\": \"bye\"}]}";
	assert_string_equal(render("{{ tools[0] | tojson }}", v), "{\"name\": \"f\", \"args\": {\"b\": 1, \"a\": [true, null, 1.5]}}");
	assert_string_equal(render("{{ tools[0].args | tojson(indent=2) }}", v),
			    "{\n  \"b\": 1,\n  \"a\": [\n    true,\n    null,\n    1.5\n  ]\n}");
	assert_string_equal(render("{{ tools[0].args | tojson(sort_keys=true) }}", v), "{\"a\": [true, null, 1.5], \"b\": 1}");
	assert_string_equal(render("{{ 'é\"\\n' | tojson }}", NULL), "\"é\\\"\\n\"");
	assert_string_equal(render("{{ msgs | length }} {{ msgs | first | tojson }} {{ (msgs | last).content }}", v),
			    "3 {\"role\": \"user\", \"content\": \"hi\"} bye");
	assert_string_equal(render("{{ msgs | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}", v),
			    "hi,bye");
	assert_string_equal(render("{{ msgs | rejectattr('role', 'eq', 'user') | list | length }}", v), "1");
	assert_string_equal(render("{{ missing | default('dflt') }} {{ '' | default('e', true) }} {{ 'x' | d('y') }}", NULL),
			    "dflt e x");
	assert_string_equal(render("{{ ['b', 'a'] | join }} {{ 'abc' | upper }} {{ '42' | int + 1 }} {{ 3 | string }}", NULL),
			    "ba ABC 43 3");
	assert_string_equal(render("{{ [1, 2] | reverse | list }} {% for k, v in {'a': 1} | items %}{{ k }}{{ v }}{% endfor %}", NULL),
			    "[2, 1] a1");
	assert_string_equal(render("{{ 'a\nb' | indent(2) }}", NULL), "a\n  b");
}

static void test_control_flow(void **state)
{
	const char *v = "{\"xs\": [\"a\", \"b\", \"c\"], \"d\": {\"k1\": \"v1\", \"k2\": \"v2\"}}";
	assert_string_equal(render("{% for x in xs %}{{ loop.index }}{{ x }}{{ ',' if not loop.last }}{% endfor %}", v),
			    "1a,2b,3c");
	assert_string_equal(render("{% for x in xs %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.length }} {% endfor %}", v),
			    "03True3 12False3 21False3 ");
	assert_string_equal(render("{% for x in xs if x != 'b' %}{{ loop.index }}{{ x }}{% endfor %}", v), "1a2c");
	assert_string_equal(render("{% for x in [] %}x{% else %}empty{% endfor %}", NULL), "empty");
	assert_string_equal(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", v), "k1=v1;k2=v2;");
	assert_string_equal(render("{% for x in xs %}{% if x == 'b' %}{% continue %}{% endif %}{% if x == 'c' %}{% break %}{% endif %}{{ x }}{% endfor %}", v),
			    "a");
	assert_string_equal(render("{% for x in xs %}{{ loop.previtem | default('-') }}{% endfor %}", v), "-ab");
	/* a set inside a loop does not leak out; a namespace does */
	assert_string_equal(render("{% set n = 0 %}{% for x in xs %}{% set n = n + 1 %}{% endfor %}{{ n }}", v), "0");
	assert_string_equal(render("{% set ns = namespace(n=0, last=none) %}{% for x in xs %}{% set ns.n = ns.n + 1 %}"
				   "{% set ns.last = x %}{% endfor %}{{ ns.n }}{{ ns.last }}",
				   v),
			    "3c");
	assert_string_equal(render("{% if 0 %}a{% elif '' %}b{% elif [1] %}c{% else %}d{% endif %}", NULL), "c");
	assert_string_equal(render("{% set a, b = [1, 2] %}{{ b }}{{ a }}", NULL), "21");
	assert_string_equal(render("{% set blk %}in {{ 'block' }}{% endset %}[{{ blk }}]", NULL), "[in block]");
	assert_string_equal(render("{% for i in range(3) %}{{ i }}{% endfor %}{% for i in range(1, 7, 2) %}{{ i }}{% endfor %}", NULL),
			    "012135");
	assert_string_equal(render("{% macro tag(name, v='x') %}<{{ name }}={{ v }}>{% endmacro %}{{ tag('a') }}{{ tag('b', v='y') }}", NULL),
			    "<a=x><b=y>");
	assert_string_equal(render("{% generation %}kept{% endgeneration %}", NULL), "kept");
}

static void test_tests_and_undefined(void **state)
{
	const char *v = "{\"m\": {\"role\": \"user\", \"content\": null, \"n\": 3}}";
	assert_string_equal(render("{{ m.reasoning is defined }} {{ m.content is none }} {{ m.role is string }} "
				   "{{ m.n is number }} {{ m.n is odd }} {{ m is mapping }} {{ m.role is not none }}",
				   v),
			    "False True True True True True True");
	assert_string_equal(render("{{ false is false }} {{ 0 is false }} {{ m.n is divisibleby 3 }} {{ m.n is eq(3) }}", v),
			    "True False True True");
	/* undefined prints empty, is falsy, iterates as empty, has length 0 */
	assert_string_equal(render("[{{ nothing }}]{{ 'y' if not nothing }}{% for x in nothing %}x{% endfor %}{{ nothing | length }}", NULL),
			    "[]y0");
	assert_string_equal(render("{{ m.missing }}|{{ m['role'] }}|{{ m.get('n') }}|{{ m.get('zz', 'dd') }}", v), "|user|3|dd");
	assert_string_equal(render("{{ strftime_now('%Y') | length }}", NULL), "4");
}

static void test_errors(void **state)
{
	int code;
	const char *msg = render_err("{{ raise_exception('Roles must alternate') }}", NULL, &code);
	assert_int_equal(code, KVF_E_INVAL);
	assert_string_equal(msg, "Roles must alternate");
	msg = render_err("{{ nothing.attr }}", NULL, &code);
	assert_int_equal(code, KVF_E_INVAL);
	assert_non_null(strstr(msg, "nothing"));
	msg = render_err("line1\n{{ 1 + 'a' }}", NULL, &code);
	assert_non_null(strstr(msg, "line 2"));
	msg = render_err("{{ x | nosuchfilter }}", NULL, &code);
	assert_int_equal(code, KVF_E_UNSUPPORTED);
	msg = render_err("{% if true %}unclosed", NULL, &code);
	assert_int_equal(code, KVF_E_PARSE);
	assert_non_null(strstr(msg, "endif"));
	msg = render_err("{% while true %}{% endwhile %}", NULL, &code);
	assert_int_equal(code, KVF_E_PARSE);
	msg = render_err("{{ 'unterminated }}", NULL, &code);
	assert_int_equal(code, KVF_E_PARSE);
	msg = render_err("{% set x.y = 1 %}", "{\"x\": {\"y\": 0}}", &code);
	assert_non_null(strstr(msg, "namespace"));
	msg = render_err("{{ 'a'.nomethod() }}", NULL, &code);
	assert_int_equal(code, KVF_E_INVAL);
}

/* The Llama-2 template raises on roles that do not alternate. */
static void test_llama2_alternation(void **state)
{
	char path[4096];
	const char *root = getenv("KVF_ROOT");
	snprintf(path, sizeof(path), "%s/tests/data/tokenizer/chat/templates/llama2.jinja", root ? root : ".");
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char src[4096];
	size_t n = fread(src, 1, sizeof(src) - 1, f);
	fclose(f);
	src[n] = '\0';
	int code;
	const char *msg = render_err(src,
				     "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"messages\": "
				     "[{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}]}",
				     &code);
	assert_int_equal(code, KVF_E_INVAL);
	assert_string_equal(msg, "Conversation roles must alternate user/assistant/user/assistant/...");
	assert_string_equal(render(src, "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"messages\": "
					"[{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \" q \"}]}"),
			    "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\n q [/INST]");
}

/* The tokenizer-level API: the model's template and special tokens. */
static void test_tokenizer_render(void **state)
{
	char path[4096];
	const char *root = getenv("KVF_ROOT");
	snprintf(path, sizeof(path), "%s/tests/data/tokenizer/small", root ? root : ".");
	kvf_tokenizer *tok;
	assert_int_equal(kvf_tokenizer_load(path, &tok), 0);
	const char *req = "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"U\"}],"
			  "\"add_generation_prompt\":true}";
	char *out;
	size_t len;
	assert_int_equal(kvf_tokenizer_chat_render(tok, req, strlen(req), &out, &len), 0);
	assert_string_equal(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
	kvf_free(out);
	/* bos_token comes from tokenizer_config.json */
	const char *tpl = "{{ bos_token }}|{{ eos_token }}|{{ messages | length }}|{{ tools is none }}|"
			  "{{ add_generation_prompt }}";
	assert_int_equal(kvf_tokenizer_set_chat_template(tok, tpl, strlen(tpl)), 0);
	assert_int_equal(kvf_tokenizer_chat_render(tok, req, strlen(req), &out, &len), 0);
	assert_string_equal(out, "<s>|</s>|2|True|True");
	kvf_free(out);
	/* defaults when the request leaves them out, as transformers passes them */
	const char *req2 = "{\"messages\":[]}";
	assert_int_equal(kvf_tokenizer_chat_render(tok, req2, strlen(req2), &out, &len), 0);
	assert_string_equal(out, "<s>|</s>|0|True|False");
	kvf_free(out);
	assert_int_equal(kvf_tokenizer_chat_render(tok, "{\"nomessages\":1}", 16, &out, &len), KVF_E_INVAL);
	assert_int_equal(kvf_tokenizer_chat_render(tok, "{bad json", 9, &out, &len), KVF_E_PARSE);
	kvf_tokenizer_destroy(tok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whitespace_control),
		cmocka_unit_test(test_values_and_operators),
		cmocka_unit_test(test_strings_and_slices),
		cmocka_unit_test(test_filters),
		cmocka_unit_test(test_control_flow),
		cmocka_unit_test(test_tests_and_undefined),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_llama2_alternation),
		cmocka_unit_test(test_tokenizer_render),
	};
	return cmocka_run_group_tests_name("tokenizer_chat", tests, NULL, NULL);
}
